"""Meters, their readings, rollups, rejected readings, corrections, status events and commands.

Energy columns are integer watt-hours (``*_wh``); power columns integer watts (``*_w``). A reading
covers the interval that ends at its ``timestamp``; ``consumed_wh`` is energy imported from the grid
side, ``produced_wh`` energy exported to it, both >= 0.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class MeterKind(enum.StrEnum):
    consumption = "consumption"
    production = "production"
    bidirectional = "bidirectional"


class MeterStatus(enum.StrEnum):
    active = "active"
    inactive = "inactive"  # readings are refused
    maintenance = "maintenance"  # readings are still accepted
    # Registered by a member in a region whose meter approval is `operator`: not eligible for
    # orders and its readings are refused until an operator approves it (status -> active).
    pending = "pending"


class Meter(IdMixin, Base):
    __tablename__ = "meters"
    __table_args__ = (Index("ix_meters_region_status", "region", "status"),)

    # Devices identify themselves by serial (MQTT topics, batch ingest); unique for ever, also
    # after deletion, so that old data can never be attributed to a new device.
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[MeterKind] = mapped_column(Enum(MeterKind, native_enum=False, length=16))
    status: Mapped[MeterStatus] = mapped_column(
        Enum(MeterStatus, native_enum=False, length=16), default=MeterStatus.active
    )
    region: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    capacity_w: Mapped[int] = mapped_column(BigInteger)  # rated power, W; caps energy per interval
    location: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    installation_date: Mapped[date | None] = mapped_column(Date)
    meter_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # Ed25519 public key (base58); when set, every reading must carry a valid signature.
    device_public_key: Mapped[str | None] = mapped_column(String(64))
    interval_minutes: Mapped[int] = mapped_column(SmallInteger, default=15)
    online: Mapped[bool] = mapped_column(default=False)
    last_reading_at: Mapped[datetime | None]  # end of the newest interval stored
    last_seen_at: Mapped[datetime | None]  # when the newest reading arrived
    # Set at ingest: when the liveness job will consider the meter offline.
    offline_due_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class MeterReading(Base):
    """One interval of one meter, idempotent on (meter, interval end)."""

    __tablename__ = "meter_readings"

    meter_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True
    )
    timestamp: Mapped[datetime] = mapped_column(primary_key=True)  # interval end
    interval_minutes: Mapped[int] = mapped_column(SmallInteger)
    consumed_wh: Mapped[int] = mapped_column(BigInteger)  # imported from the grid, >= 0
    produced_wh: Mapped[int] = mapped_column(BigInteger)  # exported to the grid, >= 0
    peak_demand_w: Mapped[int | None] = mapped_column(BigInteger)
    power_factor: Mapped[float | None] = mapped_column(Float)
    voltage: Mapped[float | None] = mapped_column(Float)  # V
    current: Mapped[float | None] = mapped_column(Float)  # A
    frequency: Mapped[float | None] = mapped_column(Float)  # Hz
    reading_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    signature: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16))  # http | batch | mqtt | green_button
    received_at: Mapped[datetime]
    revision: Mapped[int] = mapped_column(SmallInteger, default=0)  # corrections applied


class Granularity(enum.StrEnum):
    m15 = "15m"
    h1 = "1h"
    d1 = "1d"
    mo1 = "1mo"


class MeterRollup(Base):
    """Sums of raw readings per meter and bucket, maintained in the ingest's transaction.

    ``consumed_wh``/``produced_wh``/``readings`` always equal the sums over the raw readings whose
    interval lies in the bucket; quarter-hour (``15m``) rows count only readings shorter than 15
    minutes, as a 15-minute reading is a quarter-hour bucket by itself (see ``rollups``).
    ``peak_w`` is the highest power seen (peak demand when the device sends it, else the
    interval's average consumption power); ``min_w`` the lowest average power. Voltage and
    current are kept as sums in mV and mA with their counts, for averages.
    """

    __tablename__ = "meter_rollups"

    # No foreign key to meters: it would be checked for every upserted bucket at ingest, and
    # meters are never deleted (only soft-deleted); only ingest and corrections write rollups.
    meter_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    granularity: Mapped[str] = mapped_column(String(4), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    consumed_wh: Mapped[int] = mapped_column(BigInteger)
    produced_wh: Mapped[int] = mapped_column(BigInteger)
    readings: Mapped[int] = mapped_column(Integer)
    peak_w: Mapped[int] = mapped_column(BigInteger)
    min_w: Mapped[int] = mapped_column(BigInteger)
    voltage_mv_sum: Mapped[int] = mapped_column(BigInteger)
    voltage_count: Mapped[int] = mapped_column(Integer)
    current_ma_sum: Mapped[int] = mapped_column(BigInteger)
    current_count: Mapped[int] = mapped_column(Integer)


class RejectedReading(IdMixin, Base):
    """The dead-letter table: every refused reading with its reason, as received."""

    __tablename__ = "rejected_readings"
    __table_args__ = (Index("ix_rejected_readings_meter_received", "meter_id", "received_at"),)

    received_at: Mapped[datetime] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(16))
    meter_id: Mapped[uuid.UUID | None]
    meter_serial: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(32))  # API error code
    reason: Mapped[str] = mapped_column(String(32), index=True)  # finer cause
    message: Mapped[str] = mapped_column(String(500))
    payload: Mapped[Any] = mapped_column(JSON)  # the item as received (text if not JSON)


class ReadingCorrection(IdMixin, Base):
    """A stored reading replaced by staff: the superseded values, who and why.

    Rows are also the change events that settlement reads to re-settle affected epochs.
    """

    __tablename__ = "meter_reading_corrections"
    __table_args__ = (Index("ix_meter_reading_corrections_meter_ts", "meter_id", "timestamp"),)

    meter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meters.id", ondelete="CASCADE"))
    timestamp: Mapped[datetime]  # interval end of the corrected reading
    old_consumed_wh: Mapped[int] = mapped_column(BigInteger)
    old_produced_wh: Mapped[int] = mapped_column(BigInteger)
    new_consumed_wh: Mapped[int] = mapped_column(BigInteger)
    new_produced_wh: Mapped[int] = mapped_column(BigInteger)
    old_values: Mapped[dict[str, Any]] = mapped_column(JSON)  # the whole superseded reading
    reason: Mapped[str] = mapped_column(String(500))
    actor_id: Mapped[uuid.UUID | None]
    actor_type: Mapped[str] = mapped_column(String(16))  # user | api_key
    api_key_id: Mapped[uuid.UUID | None]
    corrected_at: Mapped[datetime] = mapped_column(index=True)


class MeterStatusEvent(IdMixin, Base):
    """An online/offline transition; alerts read these to raise and clear `device_offline`."""

    __tablename__ = "meter_status_events"
    __table_args__ = (Index("ix_meter_status_events_meter_at", "meter_id", "at"),)

    meter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meters.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16))  # online | offline
    # missed_intervals | last_will | device_status | reading
    reason: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CommandStatus(enum.StrEnum):
    pending = "pending"
    sent = "sent"
    acked = "acked"
    failed = "failed"
    timeout = "timeout"


class MeterCommand(IdMixin, Base):
    """A command to a device over MQTT; an outbox row until it is published."""

    __tablename__ = "meter_commands"
    __table_args__ = (Index("ix_meter_commands_status_deadline", "status", "deadline"),)

    meter_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("meters.id", ondelete="CASCADE"), index=True
    )
    command: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[CommandStatus] = mapped_column(
        Enum(CommandStatus, native_enum=False, length=16), default=CommandStatus.pending
    )
    deadline: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(500))
