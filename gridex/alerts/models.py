"""Alerts and the per-meter position of the reading rules."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class AlertType(enum.StrEnum):
    device_offline = "device_offline"
    consumption_spike = "consumption_spike"
    generation_drop = "generation_drop"
    voltage_out_of_range = "voltage_out_of_range"
    reading_rejected = "reading_rejected"
    low_balance = "low_balance"
    settlement_shortfall = "settlement_shortfall"
    chain_mismatch = "chain_mismatch"
    invoice_overdue = "invoice_overdue"
    seller_offline_before_gate = "seller_offline_before_gate"


class Severity(enum.StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class AlertStatus(enum.StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class SubjectKind(enum.StrEnum):
    meter = "meter"
    user = "user"
    region = "region"
    epoch = "epoch"
    invoice = "invoice"


class Alert(IdMixin, Base):
    """One alert. ``open_key`` is ``type:subject kind:subject id`` while the alert is not
    resolved and null after: its unique index is what keeps one unresolved alert per type and
    subject, also when two workers raise the same condition at once."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_open_key", "open_key", unique=True),
        Index("ix_alerts_user_raised", "user_id", "raised_at"),
        Index("ix_alerts_region_status", "region", "status"),
        Index("ix_alerts_status_type", "status", "type"),
    )

    type: Mapped[AlertType] = mapped_column(Enum(AlertType, native_enum=False, length=32))
    severity: Mapped[Severity] = mapped_column(Enum(Severity, native_enum=False, length=16))
    status: Mapped[AlertStatus] = mapped_column(
        Enum(AlertStatus, native_enum=False, length=16), default=AlertStatus.open
    )
    subject_kind: Mapped[SubjectKind] = mapped_column(
        Enum(SubjectKind, native_enum=False, length=16)
    )
    subject_id: Mapped[str] = mapped_column(String(64))
    open_key: Mapped[str | None] = mapped_column(String(128))
    # Who the alert is about and sees it as its own (null: staff only, e.g. the chain mirror).
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    meter_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    region: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # How many times the condition was seen while this alert was unresolved.
    occurrences: Mapped[int] = mapped_column(default=1)
    raised_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[uuid.UUID | None]
    resolved_at: Mapped[datetime | None]
    # Null with ``resolved_at`` set: the condition cleared by itself (auto-resolved).
    resolved_by: Mapped[uuid.UUID | None]
    note: Mapped[str | None] = mapped_column(String(1000))


class MeterWatch(Base):
    """How far the reading rules have read one meter: the newest interval end they checked."""

    __tablename__ = "alert_meter_watch"

    meter_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    checked_until: Mapped[datetime]
