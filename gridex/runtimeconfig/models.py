"""The runtime settings admins changed, and the version counter every process watches."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base


class RuntimeSetting(Base):
    """One overridden setting; a setting without a row has its environment (``GRIDEX_*``) value."""

    __tablename__ = "runtime_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The value as the API speaks it: a number, a decimal string or a map of them.
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime]
    updated_by_id: Mapped[uuid.UUID | None]


class RuntimeConfigVersion(Base):
    """A single row (``id`` 1) whose ``version`` goes up with every change: a process compares it
    with the version it loaded to know whether its settings are stale."""

    __tablename__ = "runtime_config_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]
