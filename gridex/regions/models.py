from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Enum, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base


class MeterApproval(enum.StrEnum):
    """Who makes a member's newly registered meter active in the region."""

    auto = "auto"  # active at once
    operator = "operator"  # pending until an operator or admin approves it


class Region(Base):
    """A region of the deployment. Its market settings, tariffs and operators hang off its name."""

    __tablename__ = "regions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # IANA time zone of the region's local time (tariff bands, billing months).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    meter_approval: Mapped[MeterApproval] = mapped_column(
        Enum(MeterApproval, native_enum=False, length=16),
        default=MeterApproval.auto,
        server_default=MeterApproval.auto.value,
    )
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID | None]
