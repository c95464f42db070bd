"""The ingest hot path: one validation and storage path for HTTP, batch, MQTT and Green Button.

Set-based on purpose: readings are inserted in bulk with ``ON CONFLICT DO NOTHING ... RETURNING``
(idempotent on meter and interval end), rollups are upserted per (meter, granularity, bucket) with
``x = x + excluded.x`` in the same transaction, and each meter row is updated once per call. Only
rows that were not inserted are read back, to tell a duplicate from a conflict.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from prometheus_client import Counter
from sqlalchemy import Table, bindparam, case, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.security import decode_wallet_address, verify_ed25519
from gridex.core.units import UnitError, kwh_to_wh
from gridex.meters.models import (
    Granularity,
    Meter,
    MeterReading,
    MeterRollup,
    MeterStatus,
    MeterStatusEvent,
    RejectedReading,
)

READINGS_INGESTED = Counter(
    "gridex_readings_ingested_total",
    "Meter readings by ingest path and outcome",
    ["source", "outcome"],
)

# Interval lengths that divide a 15-minute bucket, so one reading never straddles two buckets.
ALLOWED_INTERVALS = frozenset({1, 3, 5, 15})
READING_FIELDS = frozenset(
    {
        "timestamp",
        "energy_consumed_kwh",
        "energy_produced_kwh",
        "interval_minutes",
        "peak_demand_kw",
        "power_factor",
        "voltage",
        "current",
        "frequency",
        "metadata",
        "signature",
    }
)
_ROUTING_FIELDS = frozenset({"meter_serial"})
_INSERT_COLUMNS = (
    "meter_id",
    "timestamp",
    "interval_minutes",
    "consumed_wh",
    "produced_wh",
    "peak_demand_w",
    "power_factor",
    "voltage",
    "current",
    "frequency",
    "reading_metadata",
    "signature",
    "source",
    "received_at",
    "revision",
)


@dataclass(frozen=True, slots=True)
class MeterRef:
    """What ingest needs to know about a meter, loaded once per call."""

    id: uuid.UUID
    serial: str
    status: MeterStatus
    capacity_w: int
    interval_minutes: int
    public_key: bytes | None
    online: bool

    @classmethod
    def of(cls, meter: Meter) -> MeterRef:
        key = decode_wallet_address(meter.device_public_key) if meter.device_public_key else None
        return cls(
            meter.id,
            meter.serial,
            meter.status,
            meter.capacity_w,
            meter.interval_minutes,
            key,
            meter.online,
        )


@dataclass(slots=True)
class Reading:
    """A validated reading in stored units."""

    index: int
    meter: MeterRef
    timestamp: datetime  # interval end, UTC
    interval_minutes: int
    consumed_wh: int
    produced_wh: int
    peak_demand_w: int | None = None
    power_factor: float | None = None
    voltage: float | None = None
    current: float | None = None
    frequency: float | None = None
    metadata: dict[str, Any] | None = None
    signature: str | None = None

    @property
    def interval_start(self) -> datetime:
        return self.timestamp - timedelta(minutes=self.interval_minutes)

    def row(self, source: str, received_at: datetime) -> dict[str, Any]:
        return {
            "meter_id": self.meter.id,
            "timestamp": self.timestamp,
            "interval_minutes": self.interval_minutes,
            "consumed_wh": self.consumed_wh,
            "produced_wh": self.produced_wh,
            "peak_demand_w": self.peak_demand_w,
            "power_factor": self.power_factor,
            "voltage": self.voltage,
            "current": self.current,
            "frequency": self.frequency,
            "reading_metadata": self.metadata,
            "signature": self.signature,
            "source": source,
            "received_at": received_at,
            "revision": 0,
        }


@dataclass(slots=True)
class Rejection:
    index: int
    code: str  # API error code
    reason: str  # finer cause, kept in the dead-letter table
    message: str
    payload: Any = None
    meter_id: uuid.UUID | None = None
    meter_serial: str | None = None


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(slots=True)
class Item:
    """One reading as received, with the meter it names (None: unknown or not accessible)."""

    index: int
    payload: Any
    meter: MeterRef | None
    serial: str | None = None
    # Set when the item was refused before validation (e.g. no meter_serial): (reason, message).
    malformed: tuple[str, str] | None = None


class _Reject(Exception):
    def __init__(self, code: str, reason: str, message: str) -> None:
        self.code, self.reason, self.message = code, reason, message


def canonical_json(reading: dict[str, Any]) -> bytes:
    """The bytes a device signs: the reading without ``signature``, sorted keys, no spaces."""
    body = {k: v for k, v in reading.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _invalid(reason: str, message: str) -> _Reject:
    return _Reject("VALIDATION_ERROR", reason, message)


def _number(raw: dict[str, Any], name: str, *, required: bool = False) -> float | int | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise _invalid("malformed", f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("malformed", f"{name} must be a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise _invalid("malformed", f"{name} must be finite")
    return value


def _wh(raw: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = _number(raw, name, required=required)
    if value is None:
        return None
    try:
        wh = kwh_to_wh(value)
    except UnitError as exc:
        raise _invalid("malformed", f"{name}: {exc}") from exc
    if wh < 0:
        raise _invalid("negative", f"{name} must not be negative")
    return wh


def _timestamp(raw: dict[str, Any]) -> datetime:
    value = raw.get("timestamp")
    if not isinstance(value, str):
        raise _invalid("malformed", "timestamp is required (ISO 8601 with a time zone)")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _invalid("malformed", "timestamp is not ISO 8601") from exc
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise _invalid(
            "naive_timestamp", "timestamp must include a time zone (e.g. 2025-01-01T00:15:00Z)"
        )
    return ts.astimezone(UTC)


def _range(value: float | int | None, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if not low <= value <= high:
        raise _invalid("out_of_range", f"{name} must be between {low} and {high}")
    return float(value)


def parse_reading(item: Item, *, now: datetime, skew: timedelta, oldest: datetime) -> Reading:
    """Validate one reading against its meter; raises ``_Reject`` with the per-item code."""
    meter = item.meter
    raw = item.payload
    if item.malformed is not None:
        raise _invalid(*item.malformed)
    if meter is None:
        raise _Reject("NOT_FOUND", "unknown_meter", "No such meter")
    if meter.status is MeterStatus.inactive:
        raise _Reject("CONFLICT", "meter_inactive", "The meter is inactive")
    if not isinstance(raw, dict):
        raise _invalid("malformed", "A reading must be a JSON object")
    unknown = raw.keys() - READING_FIELDS - _ROUTING_FIELDS
    if unknown:
        raise _invalid("malformed", f"unknown fields: {sorted(unknown)}")
    signature = raw.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise _invalid("malformed", "signature must be a base58 string")
    if meter.public_key is not None:
        if not signature:
            raise _Reject("INVALID_SIGNATURE", "missing_signature", "This meter signs readings")
        if not verify_ed25519(meter.public_key, canonical_json(raw), signature):
            raise _Reject("INVALID_SIGNATURE", "invalid_signature", "The signature is invalid")

    ts = _timestamp(raw)
    consumed = _wh(raw, "energy_consumed_kwh", required=True) or 0
    produced = _wh(raw, "energy_produced_kwh", required=True) or 0
    interval = raw.get("interval_minutes", meter.interval_minutes)
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise _invalid("malformed", "interval_minutes must be an integer")
    if interval not in ALLOWED_INTERVALS:
        raise _invalid("malformed", f"interval_minutes must be one of {sorted(ALLOWED_INTERVALS)}")
    if ts.second or ts.microsecond or ts.minute % interval:
        raise _invalid(
            "misaligned", f"timestamp must end a {interval}-minute interval (e.g. :00, :15)"
        )
    if ts > now + skew:
        raise _invalid("future_timestamp", "timestamp is in the future")
    if ts < oldest:
        raise _invalid("too_old", "timestamp is older than the retention window")
    # No more energy than the meter's rated power over the interval: wh <= W x minutes / 60.
    limit = meter.capacity_w * interval
    if consumed * 60 > limit or produced * 60 > limit:
        raise _invalid(
            "over_capacity",
            f"more energy than {meter.capacity_w} W x {interval} min allows",
        )
    peak = _wh(raw, "peak_demand_kw", required=False)  # kW -> W: the same x1000
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("malformed", "metadata must be an object")
    return Reading(
        index=item.index,
        meter=meter,
        timestamp=ts,
        interval_minutes=interval,
        consumed_wh=consumed,
        produced_wh=produced,
        peak_demand_w=peak,
        power_factor=_range(_number(raw, "power_factor"), "power_factor", -1, 1),
        voltage=_range(_number(raw, "voltage"), "voltage", 0, 1_000_000),
        current=_range(_number(raw, "current"), "current", 0, 1_000_000),
        frequency=_range(_number(raw, "frequency"), "frequency", 0, 1_000),
        metadata=metadata,
        signature=signature,
    )


# --- buckets ---------------------------------------------------------------------------------


def bucket_start(granularity: str, ts: datetime) -> datetime:
    """The start of the bucket of ``granularity`` that contains instant ``ts`` (UTC)."""
    if granularity == Granularity.m15:
        return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)
    if granularity == Granularity.h1:
        return ts.replace(minute=0, second=0, microsecond=0)
    if granularity == Granularity.d1:
        return ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_bucket(granularity: str, start: datetime) -> datetime:
    if granularity == Granularity.m15:
        return start + timedelta(minutes=15)
    if granularity == Granularity.h1:
        return start + timedelta(hours=1)
    if granularity == Granularity.d1:
        return start + timedelta(days=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


GRANULARITIES = (Granularity.m15, Granularity.h1, Granularity.d1, Granularity.mo1)


@dataclass(slots=True)
class Accumulator:
    consumed_wh: int = 0
    produced_wh: int = 0
    readings: int = 0
    peak_w: int = 0
    min_w: int | None = None
    voltage_mv_sum: int = 0
    voltage_count: int = 0
    current_ma_sum: int = 0
    current_count: int = 0

    def add(
        self,
        consumed_wh: int,
        produced_wh: int,
        interval_minutes: int,
        peak_demand_w: int | None,
        voltage: float | None,
        current: float | None,
    ) -> None:
        self.consumed_wh += consumed_wh
        self.produced_wh += produced_wh
        self.readings += 1
        # Average consumption power; exact because the interval divides 60 minutes.
        power = consumed_wh * (60 // interval_minutes)
        self.peak_w = max(self.peak_w, power, peak_demand_w or 0)
        self.min_w = power if self.min_w is None else min(self.min_w, power)
        if voltage is not None:
            self.voltage_mv_sum += round(voltage * 1000)
            self.voltage_count += 1
        if current is not None:
            self.current_ma_sum += round(current * 1000)
            self.current_count += 1

    def row(self, meter_id: uuid.UUID, granularity: str, start: datetime) -> dict[str, Any]:
        return {
            "meter_id": meter_id,
            "granularity": granularity,
            "bucket_start": start,
            "consumed_wh": self.consumed_wh,
            "produced_wh": self.produced_wh,
            "readings": self.readings,
            "peak_w": self.peak_w,
            "min_w": self.min_w or 0,
            "voltage_mv_sum": self.voltage_mv_sum,
            "voltage_count": self.voltage_count,
            "current_ma_sum": self.current_ma_sum,
            "current_count": self.current_count,
        }


def rollup_rows(readings: Iterable[Reading]) -> list[dict[str, Any]]:
    """Per (meter, granularity, bucket) sums of ``readings``, sorted by key (lock order)."""
    acc: dict[tuple[uuid.UUID, str, datetime], Accumulator] = {}
    for r in readings:
        start = r.interval_start
        # One quarter per reading (its interval divides 15 minutes); coarser buckets from it.
        quarter = start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)
        hour = quarter.replace(minute=0)
        day = hour.replace(hour=0)
        for key in (
            (r.meter.id, "15m", quarter),
            (r.meter.id, "1h", hour),
            (r.meter.id, "1d", day),
            (r.meter.id, "1mo", day.replace(day=1)),
        ):
            a = acc.get(key)
            if a is None:
                a = acc[key] = Accumulator()
            a.add(
                r.consumed_wh,
                r.produced_wh,
                r.interval_minutes,
                r.peak_demand_w,
                r.voltage,
                r.current,
            )
    return [a.row(meter_id, g, start) for (meter_id, g, start), a in sorted(acc.items())]


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """``INSERT`` with the backend's ``ON CONFLICT`` support (SQLite and PostgreSQL alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def upsert_add_rollups(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Add ``rows`` into the rollups: sums add up, peaks and minima widen."""
    if not rows:
        return
    table = MeterRollup.__table__
    stmt = dialect_insert(session, table)
    ex = stmt.excluded
    c = table.c
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.meter_id, c.granularity, c.bucket_start],
        set_={
            "consumed_wh": c.consumed_wh + ex.consumed_wh,
            "produced_wh": c.produced_wh + ex.produced_wh,
            "readings": c.readings + ex.readings,
            "peak_w": case((ex.peak_w > c.peak_w, ex.peak_w), else_=c.peak_w),
            "min_w": case((ex.min_w < c.min_w, ex.min_w), else_=c.min_w),
            "voltage_mv_sum": c.voltage_mv_sum + ex.voltage_mv_sum,
            "voltage_count": c.voltage_count + ex.voltage_count,
            "current_ma_sum": c.current_ma_sum + ex.current_ma_sum,
            "current_count": c.current_count + ex.current_count,
        },
    )
    await session.execute(stmt, list(rows))


async def _insert_readings(
    session: AsyncSession, readings: list[Reading], source: str, now: datetime
) -> set[tuple[uuid.UUID, datetime]]:
    """Insert what is new; returns the keys actually inserted."""
    table = MeterReading.__table__
    stmt = (
        dialect_insert(session, table)
        .on_conflict_do_nothing(index_elements=[table.c.meter_id, table.c.timestamp])
        .returning(table.c.meter_id, table.c.timestamp)
    )
    rows = [r.row(source, now) for r in readings]
    result = await session.execute(stmt, rows)
    return {(m, ts.astimezone(UTC)) for m, ts in result.all()}


async def _existing(
    session: AsyncSession, keys: list[tuple[uuid.UUID, datetime]]
) -> dict[tuple[uuid.UUID, datetime], tuple[int, int]]:
    found: dict[tuple[uuid.UUID, datetime], tuple[int, int]] = {}
    for i in range(0, len(keys), 2000):
        chunk = keys[i : i + 2000]
        rows = await session.execute(
            select(
                MeterReading.meter_id,
                MeterReading.timestamp,
                MeterReading.consumed_wh,
                MeterReading.produced_wh,
            ).where(tuple_(MeterReading.meter_id, MeterReading.timestamp).in_(chunk))
        )
        for m, ts, consumed, produced in rows:
            found[(m, ts)] = (consumed, produced)
    return found


async def _touch_meters(
    session: AsyncSession, rt: Runtime, readings: list[Reading], now: datetime
) -> None:
    """Newest reading, liveness deadline and online flag, one UPDATE per meter (sorted)."""
    newest: dict[uuid.UUID, Reading] = {}
    for r in readings:
        current = newest.get(r.meter.id)
        if current is None or r.timestamp > current.timestamp:
            newest[r.meter.id] = r
    n = rt.settings.offline_after_intervals
    params = []
    events = []
    for meter_id in sorted(newest):
        r = newest[meter_id]
        due = r.timestamp + timedelta(minutes=r.meter.interval_minutes * n)
        # A backfilled old reading does not bring a meter back online.
        live = due > now
        params.append({"m_id": meter_id, "m_ts": r.timestamp, "m_due": due, "m_live": live})
        emit(
            session,
            rt.pubsub,
            [f"meter:{meter_id}"],
            "reading_received",
            {"meter_id": str(meter_id), "timestamp": utc_iso(r.timestamp)},
            now,
        )
        if live and not r.meter.online:
            emit(
                session,
                rt.pubsub,
                [f"meter:{meter_id}"],
                "device_online",
                {"meter_id": str(meter_id)},
                now,
            )
            events.append(
                MeterStatusEvent(
                    meter_id=meter_id,
                    at=now,
                    status="online",
                    reason="reading",
                    details={"timestamp": r.timestamp.isoformat()},
                )
            )
    table = cast(Table, Meter.__table__)
    c = table.c
    stmt = (
        update(table)
        .where(c.id == bindparam("m_id"))
        .values(
            last_reading_at=case(
                (
                    c.last_reading_at.is_(None) | (c.last_reading_at < bindparam("m_ts")),
                    bindparam("m_ts"),
                ),
                else_=c.last_reading_at,
            ),
            offline_due_at=case(
                (
                    c.offline_due_at.is_(None) | (c.offline_due_at < bindparam("m_due")),
                    bindparam("m_due"),
                ),
                else_=c.offline_due_at,
            ),
            online=c.online | bindparam("m_live"),
            last_seen_at=now,
        )
    )
    if params:
        await session.execute(stmt, params)
    session.add_all(events)


def dead_letters(
    rejections: Iterable[Rejection], source: str, now: datetime
) -> list[RejectedReading]:
    return [
        RejectedReading(
            id=uuid.uuid4(),
            received_at=now,
            source=source,
            meter_id=r.meter_id,
            meter_serial=r.meter_serial,
            code=r.code,
            reason=r.reason,
            message=r.message[:500],
            payload=r.payload,
        )
        for r in rejections
    ]


async def ingest(
    session: AsyncSession, rt: Runtime, items: Sequence[Item], *, source: str
) -> IngestResult:
    """Validate and store ``items``; rollups, meter state and dead letters in the same unit of work.

    Never raises for a bad reading: each one is answered in the result and kept in the dead-letter
    table. The caller's session commits.
    """
    now = rt.clock.now()
    skew = timedelta(seconds=rt.settings.reading_future_skew_seconds)
    oldest = now - timedelta(days=rt.settings.reading_retention_days)
    result = IngestResult()
    valid: list[Reading] = []
    payloads: dict[int, Item] = {}
    seen: dict[tuple[uuid.UUID, datetime], Reading] = {}

    def reject(item: Item, code: str, reason: str, message: str) -> None:
        result.rejected.append(
            Rejection(
                item.index,
                code,
                reason,
                message,
                item.payload,
                item.meter.id if item.meter else None,
                item.meter.serial if item.meter else item.serial,
            )
        )

    for item in items:
        payloads[item.index] = item
        try:
            reading = parse_reading(item, now=now, skew=skew, oldest=oldest)
        except _Reject as exc:
            reject(item, exc.code, exc.reason, exc.message)
            continue
        key = (reading.meter.id, reading.timestamp)
        first = seen.get(key)
        if first is None:
            seen[key] = reading
            valid.append(reading)
        elif (first.consumed_wh, first.produced_wh) == (reading.consumed_wh, reading.produced_wh):
            result.duplicates += 1
        else:
            reject(
                item,
                "READING_CONFLICT",
                "conflict",
                "Another reading for this interval in the same request has other values",
            )

    if valid:
        valid.sort(key=lambda r: (r.meter.id, r.timestamp))
        inserted = await _insert_readings(session, valid, source, now)
        stored = [r for r in valid if (r.meter.id, r.timestamp) in inserted]
        rest = [r for r in valid if (r.meter.id, r.timestamp) not in inserted]
        if rest:
            existing = await _existing(session, [(r.meter.id, r.timestamp) for r in rest])
            for r in rest:
                values = existing.get((r.meter.id, r.timestamp))
                if values == (r.consumed_wh, r.produced_wh):
                    result.duplicates += 1
                else:
                    reject(
                        payloads[r.index],
                        "READING_CONFLICT",
                        "conflict",
                        "A reading with other values is stored for this interval",
                    )
        result.accepted = len(stored)
        if stored:
            await upsert_add_rollups(session, rollup_rows(stored))
            await _touch_meters(session, rt, stored, now)

    if result.rejected:
        result.rejected.sort(key=lambda r: r.index)
        session.add_all(dead_letters(result.rejected, source, now))
        await session.flush()
    READINGS_INGESTED.labels(source, "accepted").inc(result.accepted)
    READINGS_INGESTED.labels(source, "duplicate").inc(result.duplicates)
    READINGS_INGESTED.labels(source, "rejected").inc(len(result.rejected))
    return result
