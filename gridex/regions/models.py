from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base


class Region(Base):
    """A region of the deployment. Its market settings, tariffs and operators hang off its name."""

    __tablename__ = "regions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # IANA time zone of the region's local time (tariff bands, billing months).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID | None]
