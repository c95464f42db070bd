"""Tariff tables: schedules (superseding one another by ``effective_from``) and overrides.

Prices are integer micros of the deployment currency per kWh. Times of day in a schedule's
bands are local to the region's ``timezone`` (``regions.timezone``); every timestamp column is
UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class TariffSchedule(IdMixin, Base):
    """A region's tariff from ``effective_from`` until the next schedule's ``effective_from``.

    Rows are never changed: a new tariff is a new row, so the price at any past time stays what
    it was. ``bands`` is a list of ``{"name", "start": "HH:MM", "end": "HH:MM",
    "import_price_micros", "days": ["mon", ...]}`` (local clock times; ``end`` ``"24:00"`` is
    midnight; ``end <= start`` wraps past midnight); a time no band covers is charged
    ``import_price_micros`` (the band ``standard``). ``holidays`` (``"yyyy-mm-dd"``) count as
    Sundays.
    """

    __tablename__ = "tariff_schedules"
    __table_args__ = (UniqueConstraint("region", "effective_from"),)

    region: Mapped[str] = mapped_column(ForeignKey("regions.name"))
    effective_from: Mapped[datetime]
    import_price_micros: Mapped[int] = mapped_column(BigInteger)  # per kWh, outside the bands
    feed_in_price_micros: Mapped[int] = mapped_column(BigInteger)  # per kWh exported
    bands: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    holidays: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID | None]


class TariffOverride(IdMixin, Base):
    """An admin's price for a window: wins over the schedule from ``starts_at`` until
    ``ends_at`` (``expires_at``, or the moment it was cancelled if earlier). A null price leaves
    the schedule's in force; among overlapping overrides the one created last wins."""

    __tablename__ = "tariff_overrides"
    __table_args__ = (Index("ix_tariff_overrides_region_window", "region", "starts_at", "ends_at"),)

    region: Mapped[str] = mapped_column(ForeignKey("regions.name"))
    import_price_micros: Mapped[int | None] = mapped_column(BigInteger)  # per kWh
    feed_in_price_micros: Mapped[int | None] = mapped_column(BigInteger)  # per kWh
    reason: Mapped[str] = mapped_column(String(500))
    starts_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ends_at: Mapped[datetime]  # min(expires_at, cancelled_at)
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID | None]
    cancelled_at: Mapped[datetime | None]
    cancelled_by_id: Mapped[uuid.UUID | None]
