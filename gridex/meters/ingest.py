"""The ingest hot path: one validation and storage path for HTTP, batch, MQTT and Green Button.

Set-based on purpose: readings are inserted in bulk with ``ON CONFLICT DO NOTHING ... RETURNING``
(idempotent on meter and interval end), rollups are upserted per (meter, granularity, bucket) with
``x = x + excluded.x`` in the same transaction, and each meter row is updated once per call. Only
rows that were not inserted are read back, to tell a duplicate from a conflict.

Validation runs ``quick_reading`` first (plain checks for the common valid reading) and falls back
to ``parse_reading``, which decides and words every rejection. On PostgreSQL the readings go to
the server as one array per column in a single statement that inserts them and sums and upserts
the rollups of exactly the inserted rows server-side (``_PG_INGEST``); SQLite inserts the rows and
upserts rollups aggregated in Python. Either way the writes start only after validation, through
``begin_write``: on SQLite that is where a call queues for the single write lock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from prometheus_client import Counter
from sqlalchemy import Table, bindparam, case, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.db import begin_write
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.security import decode_wallet_address, verify_ed25519
from gridex.core.units import WH_PER_KWH, UnitError, kwh_to_wh
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
        """The ``meter_readings`` row, keyed by column for a Core insert."""
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
            "metadata": self.metadata,  # the column's key (the ORM attribute is reading_metadata)
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
    try:
        return ts.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00
        raise _invalid("malformed", "timestamp is out of range") from exc


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


_ALL_FIELDS = READING_FIELDS | _ROUTING_FIELDS


class _Unsure(Exception):
    """Raised inside ``quick_reading`` for anything but a plain valid value: ask the slow path."""


def _quick_wh(value: Any) -> int:
    """``kwh_to_wh`` of a plain JSON number that converts exactly (``_Unsure`` otherwise).

    For |kWh| < 1e9 a float has a <= 3-decimal shortest form exactly when ``round(x * 1000)
    / 1000`` gives it back, so this agrees with the Decimal conversion wherever it answers.
    """
    kind = type(value)
    if kind is int:
        wh: int = value * WH_PER_KWH
    elif kind is float and -1e9 < value < 1e9:
        wh = round(value * WH_PER_KWH)
        if wh / WH_PER_KWH != value:
            raise _Unsure
    else:
        raise _Unsure
    if wh < 0:
        raise _Unsure
    return wh


def _quick_float(value: Any, low: float, high: float) -> float | None:
    """An optional plain number within [low, high] as float (``_Unsure`` otherwise)."""
    if value is None:
        return None
    kind = type(value)
    if (kind is float or kind is int) and low <= value <= high:
        return float(value)
    raise _Unsure


_fromisoformat = datetime.fromisoformat
_INACTIVE = MeterStatus.inactive


def quick_reading(item: Item, latest: datetime, oldest: datetime) -> Reading | None:
    """``parse_reading`` for the common valid case, or None when anything is unusual.

    Only accepts what ``parse_reading`` accepts and builds the same ``Reading``; everything else
    (errors, signed meters) goes through ``parse_reading``, which words the rejection. It runs
    for every reading of a batch, hence the flat checks.
    """
    meter = item.meter
    raw = item.payload
    if (
        meter is None
        or item.malformed is not None
        or type(raw) is not dict
        or meter.public_key is not None
        or meter.status is _INACTIVE
        or not raw.keys() <= _ALL_FIELDS
    ):
        return None
    get = raw.get
    stamp = get("timestamp")
    if type(stamp) is not str:
        return None
    try:
        ts = _fromisoformat(stamp)
        if ts.tzinfo is not UTC:
            if ts.tzinfo is None or ts.utcoffset() is None:
                return None
            ts = ts.astimezone(UTC)
        consumed = _quick_wh(get("energy_consumed_kwh"))
        produced = _quick_wh(get("energy_produced_kwh"))
        interval = get("interval_minutes", meter.interval_minutes)
        if type(interval) is not int or interval not in ALLOWED_INTERVALS:
            return None
        if ts.second or ts.microsecond or ts.minute % interval or ts > latest or ts < oldest:
            return None
        limit = meter.capacity_w * interval
        if consumed * 60 > limit or produced * 60 > limit:
            return None
        power_factor = _quick_float(get("power_factor"), -1, 1)
        voltage = _quick_float(get("voltage"), 0, 1_000_000)
        current = _quick_float(get("current"), 0, 1_000_000)
        frequency = _quick_float(get("frequency"), 0, 1_000)
        peak = get("peak_demand_kw")
        if peak is not None:
            peak = _quick_wh(peak)
    except (ValueError, OverflowError, _Unsure):
        return None
    metadata = get("metadata")
    if metadata is not None and type(metadata) is not dict:
        return None
    signature = get("signature")
    if signature is not None and type(signature) is not str:
        return None
    return Reading(
        item.index,
        meter,
        ts,
        interval,
        consumed,
        produced,
        peak,
        power_factor,
        voltage,
        current,
        frequency,
        metadata,
        signature,
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


class ReadingValues(Protocol):
    """What a rollup takes from a reading (a validated ``Reading`` or a stored ``MeterReading``)."""

    @property
    def consumed_wh(self) -> int: ...
    @property
    def produced_wh(self) -> int: ...
    @property
    def interval_minutes(self) -> int: ...
    @property
    def peak_demand_w(self) -> int | None: ...
    @property
    def voltage(self) -> float | None: ...
    @property
    def current(self) -> float | None: ...


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

    def add(self, reading: ReadingValues) -> None:
        self.consumed_wh += reading.consumed_wh
        self.produced_wh += reading.produced_wh
        self.readings += 1
        # Average consumption power; exact because the interval divides 60 minutes.
        power = reading.consumed_wh * (60 // reading.interval_minutes)
        self.peak_w = max(self.peak_w, power, reading.peak_demand_w or 0)
        self.min_w = power if self.min_w is None else min(self.min_w, power)
        if reading.voltage is not None:
            self.voltage_mv_sum += round(reading.voltage * 1000)
            self.voltage_count += 1
        if reading.current is not None:
            self.current_ma_sum += round(reading.current * 1000)
            self.current_count += 1

    def merge(self, other: Accumulator) -> None:
        """Add the sums of ``other`` (a finer bucket inside this one)."""
        self.consumed_wh += other.consumed_wh
        self.produced_wh += other.produced_wh
        self.readings += other.readings
        self.peak_w = max(self.peak_w, other.peak_w)
        if other.min_w is not None:
            self.min_w = other.min_w if self.min_w is None else min(self.min_w, other.min_w)
        self.voltage_mv_sum += other.voltage_mv_sum
        self.voltage_count += other.voltage_count
        self.current_ma_sum += other.current_ma_sum
        self.current_count += other.current_count

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
    """Per (meter, granularity, bucket) sums of ``readings`` in lock order.

    Each reading is added to its quarter once (its interval divides 15 minutes); hours, days and
    months are merged from the quarters.
    """
    quarters: dict[tuple[uuid.UUID, datetime], Accumulator] = {}
    for r in readings:
        start = r.timestamp - timedelta(minutes=r.interval_minutes)
        quarter = start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)
        key = (r.meter.id, quarter)
        a = quarters.get(key)
        if a is None:
            a = quarters[key] = Accumulator()
        a.add(r)
    acc: dict[tuple[uuid.UUID, str, datetime], Accumulator] = {}
    for (meter_id, quarter), a in quarters.items():
        acc[(meter_id, "15m", quarter)] = a
        hour = quarter.replace(minute=0)
        day = hour.replace(hour=0)
        for key3 in (
            (meter_id, "1h", hour),
            (meter_id, "1d", day),
            (meter_id, "1mo", day.replace(day=1)),
        ):
            coarse = acc.get(key3)
            if coarse is None:
                coarse = acc[key3] = Accumulator()
            coarse.merge(a)
    # Lock order: per meter, finest granularity first (as corrections rebuild them), then time.
    rank = {g.value: i for i, g in enumerate(GRANULARITIES)}
    ordered = sorted(acc.items(), key=lambda item: (item[0][0], rank[item[0][1]], item[0][2]))
    return [a.row(meter_id, g, start) for (meter_id, g, start), a in ordered]


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
    session: AsyncSession, rows: list[dict[str, Any]]
) -> set[tuple[uuid.UUID, datetime]]:
    """Insert what is new (``Reading.row`` dicts); returns the keys actually inserted."""
    table = MeterReading.__table__
    stmt = (
        dialect_insert(session, table)
        .on_conflict_do_nothing(index_elements=[table.c.meter_id, table.c.timestamp])
        .returning(table.c.meter_id, table.c.timestamp)
    )
    result = await session.execute(stmt, rows)
    return {(m, ts.astimezone(UTC)) for m, ts in result.all()}


# One statement on PostgreSQL: the readings arrive as arrays, the insert reports what is new, and
# the rollups of exactly those rows are summed and upserted server-side (lock order: sorted keys).
_PG_SUMS = """sum(consumed_wh)::int8 AS consumed_wh, sum(produced_wh)::int8 AS produced_wh,
    sum(readings)::int8 AS readings, max(peak_w) AS peak_w, min(min_w) AS min_w,
    sum(voltage_mv_sum)::int8 AS voltage_mv_sum, sum(voltage_count)::int8 AS voltage_count,
    sum(current_ma_sum)::int8 AS current_ma_sum, sum(current_count)::int8 AS current_count"""
_PG_COLUMNS = """bucket, consumed_wh, produced_wh, readings, peak_w, min_w, voltage_mv_sum,
    voltage_count, current_ma_sum, current_count"""
_PG_INGEST = """
WITH src AS (
    SELECT meter_id, ts, COALESCE(interval_minutes, $16::int2) AS interval_minutes,
           consumed_wh, produced_wh, COALESCE(peak_demand_w, $17::int8) AS peak_demand_w,
           COALESCE(power_factor, $18::float8) AS power_factor,
           COALESCE(voltage, $19::float8) AS voltage, COALESCE(current_a, $20::float8) AS current_a,
           COALESCE(frequency, $21::float8) AS frequency, COALESCE(metadata, $22::text) AS metadata,
           COALESCE(signature, $23::text) AS signature
    FROM unnest(
        $1::uuid[], $2::timestamptz[], $3::int2[], $4::int8[], $5::int8[], $6::int8[],
        $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::text[], $12::text[]
    ) AS s(meter_id, ts, interval_minutes, consumed_wh, produced_wh, peak_demand_w,
           power_factor, voltage, current_a, frequency, metadata, signature)
),
ins AS (
    INSERT INTO meter_readings (
        meter_id, "timestamp", interval_minutes, consumed_wh, produced_wh, peak_demand_w,
        power_factor, voltage, "current", frequency, metadata, signature, source, received_at,
        revision
    )
    SELECT meter_id, ts, interval_minutes, consumed_wh, produced_wh, peak_demand_w,
           power_factor, voltage, current_a, frequency, metadata::json, signature, $13, $14, 0
    FROM src ORDER BY meter_id, ts
    ON CONFLICT (meter_id, "timestamp") DO NOTHING
    RETURNING meter_id, "timestamp", interval_minutes, consumed_wh, produced_wh, peak_demand_w,
              voltage, "current"
),
q AS (
    SELECT meter_id,
           date_bin(
               '15 minutes', "timestamp" - make_interval(mins => interval_minutes),
               TIMESTAMPTZ '2000-01-01 00:00:00+00'
           ) AS bucket,
           consumed_wh, produced_wh,
           consumed_wh * (60 / interval_minutes) AS power,
           GREATEST(consumed_wh * (60 / interval_minutes), COALESCE(peak_demand_w, 0)) AS peak,
           round(voltage * 1000)::int8 AS voltage_mv,
           round("current" * 1000)::int8 AS current_ma
    FROM ins
),
m15 AS (
    SELECT meter_id, bucket, sum(consumed_wh)::int8 AS consumed_wh,
           sum(produced_wh)::int8 AS produced_wh, count(*) AS readings, max(peak) AS peak_w,
           min(power) AS min_w, COALESCE(sum(voltage_mv), 0)::int8 AS voltage_mv_sum,
           count(voltage_mv) AS voltage_count, COALESCE(sum(current_ma), 0)::int8 AS current_ma_sum,
           count(current_ma) AS current_count
    FROM q GROUP BY meter_id, bucket
),
h1 AS (
    SELECT meter_id, date_trunc('hour', bucket, 'UTC') AS bucket, {sums} FROM m15 GROUP BY 1, 2
),
d1 AS (
    SELECT meter_id, date_trunc('day', bucket, 'UTC') AS bucket, {sums} FROM h1 GROUP BY 1, 2
),
mo1 AS (
    SELECT meter_id, date_trunc('month', bucket, 'UTC') AS bucket, {sums} FROM d1 GROUP BY 1, 2
),
rollups AS (
    INSERT INTO meter_rollups (
        meter_id, granularity, bucket_start, consumed_wh, produced_wh, readings, peak_w, min_w,
        voltage_mv_sum, voltage_count, current_ma_sum, current_count
    )
    SELECT meter_id, granularity, {columns} FROM (
        SELECT meter_id, '15m' AS granularity, 0 AS rank, {columns} FROM m15
        UNION ALL SELECT meter_id, '1h', 1, {columns} FROM h1
        UNION ALL SELECT meter_id, '1d', 2, {columns} FROM d1
        UNION ALL SELECT meter_id, '1mo', 3, {columns} FROM mo1
    ) AS b
    -- Lock order: per meter, finest granularity first (as corrections rebuild them), then time.
    ORDER BY meter_id, rank, bucket
    ON CONFLICT (meter_id, granularity, bucket_start) DO UPDATE SET
        consumed_wh = meter_rollups.consumed_wh + excluded.consumed_wh,
        produced_wh = meter_rollups.produced_wh + excluded.produced_wh,
        readings = meter_rollups.readings + excluded.readings,
        peak_w = GREATEST(meter_rollups.peak_w, excluded.peak_w),
        min_w = LEAST(meter_rollups.min_w, excluded.min_w),
        voltage_mv_sum = meter_rollups.voltage_mv_sum + excluded.voltage_mv_sum,
        voltage_count = meter_rollups.voltage_count + excluded.voltage_count,
        current_ma_sum = meter_rollups.current_ma_sum + excluded.current_ma_sum,
        current_count = meter_rollups.current_count + excluded.current_count
)
SELECT true AS stored, meter_id, max("timestamp") AS ts, NULL::int8, NULL::int8
FROM ins GROUP BY meter_id
UNION ALL
SELECT false, s.meter_id, s.ts, r.consumed_wh, r.produced_wh
FROM src s LEFT JOIN meter_readings r ON r.meter_id = s.meter_id AND r."timestamp" = s.ts
WHERE (SELECT count(*) FROM ins) < $15
  AND NOT EXISTS (SELECT 1 FROM ins i WHERE i.meter_id = s.meter_id AND i."timestamp" = s.ts)
""".replace("{sums}", _PG_SUMS).replace("{columns}", _PG_COLUMNS)


def _column(values: list[Any]) -> tuple[list[Any] | None, Any]:
    """A column as ``(array, None)``, or ``(None, value)`` when every row has the same value
    (often: the interval, or no value at all). unnest pads a NULL array with NULLs and the
    statement puts the value back, so the array is neither encoded nor sent."""
    first = values[0]
    # -0.0 == 0.0: a float zero is sent as it is, sign and all.
    if values.count(first) == len(values) and not (type(first) is float and first == 0.0):
        return None, first
    return values, None


async def _store_postgres(
    session: AsyncSession, readings: list[Reading], source: str, now: datetime
) -> tuple[dict[uuid.UUID, datetime], dict[tuple[uuid.UUID, datetime], tuple[int, int] | None]]:
    """Insert what is new and add it to the rollups, in one statement of the session's
    transaction. Returns the newest stored timestamp per meter, and the keys not inserted with
    the (consumed_wh, produced_wh) already stored when the statement could see them."""
    conn = await session.connection()
    dumps = json.dumps  # the JSON column's default serialiser: the same stored text
    folded = [
        _column([r.interval_minutes for r in readings]),
        _column([r.peak_demand_w for r in readings]),
        _column([r.power_factor for r in readings]),
        _column([r.voltage for r in readings]),
        _column([r.current for r in readings]),
        _column([r.frequency for r in readings]),
        _column([None if r.metadata is None else dumps(r.metadata) for r in readings]),
        _column([r.signature for r in readings]),
    ]
    arrays = [array for array, _ in folded]
    params = (
        [r.meter.id for r in readings],
        [r.timestamp for r in readings],
        arrays[0],
        [r.consumed_wh for r in readings],
        [r.produced_wh for r in readings],
        *arrays[1:],
        source,
        now,
        len(readings),
        *(value for _, value in folded),
    )
    result = await conn.exec_driver_sql(_PG_INGEST, params)
    newest: dict[uuid.UUID, datetime] = {}
    rest: dict[tuple[uuid.UUID, datetime], tuple[int, int] | None] = {}
    rows: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
    for stored, meter_id, ts, consumed, produced in rows:
        if stored:
            newest[meter_id] = ts.astimezone(UTC)
        else:
            # No values: committed by another transaction after this statement's snapshot.
            values = None if consumed is None else (consumed, produced)
            rest[(meter_id, ts.astimezone(UTC))] = values
    return newest, rest


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


def _newest(readings: Iterable[Reading]) -> dict[uuid.UUID, tuple[MeterRef, datetime]]:
    newest: dict[uuid.UUID, tuple[MeterRef, datetime]] = {}
    for r in readings:
        current = newest.get(r.meter.id)
        if current is None or r.timestamp > current[1]:
            newest[r.meter.id] = (r.meter, r.timestamp)
    return newest


async def _touch_meters(
    session: AsyncSession,
    rt: Runtime,
    newest: dict[uuid.UUID, tuple[MeterRef, datetime]],
    now: datetime,
) -> None:
    """Newest reading, liveness deadline and online flag, one UPDATE per meter (sorted)."""
    n = rt.settings.offline_after_intervals
    params = []
    events = []
    for meter_id in sorted(newest):
        meter, ts = newest[meter_id]
        due = ts + timedelta(minutes=meter.interval_minutes * n)
        # A backfilled old reading does not bring a meter back online.
        live = due > now
        params.append({"m_id": meter_id, "m_ts": ts, "m_due": due, "m_live": live})
        emit(
            session,
            rt.pubsub,
            [f"meter:{meter_id}"],
            "reading_received",
            {"meter_id": str(meter_id), "timestamp": utc_iso(ts)},
            now,
        )
        if live and not meter.online:
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
                    details={"timestamp": ts.isoformat()},
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


async def _classify_rest(
    session: AsyncSession,
    rest: list[Reading],
    payloads: dict[int, Item],
    result: IngestResult,
    reject: Callable[[Item, str, str, str], None],
    known: dict[tuple[uuid.UUID, datetime], tuple[int, int] | None] | None = None,
) -> None:
    """Valid readings that were not inserted: a duplicate of the stored one, or a conflict.

    ``known``: stored values already read; the others are read here."""
    if not rest:
        return
    existing = {k: v for k, v in (known or {}).items() if v is not None}
    missing = [(r.meter.id, r.timestamp) for r in rest if (r.meter.id, r.timestamp) not in existing]
    if missing:
        existing.update(await _existing(session, missing))
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
    seen: dict[tuple[int, datetime], Reading] = {}  # by (meter id as int: hashed in C, end)

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

    latest = now + skew
    for item in items:
        payloads[item.index] = item
        reading = quick_reading(item, latest, oldest)
        if reading is None:
            try:
                reading = parse_reading(item, now=now, skew=skew, oldest=oldest)
            except _Reject as exc:
                reject(item, exc.code, exc.reason, exc.message)
                continue
        key = (reading.meter.id.int, reading.timestamp)
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

    postgres = session.get_bind().dialect.name == "postgresql"
    if valid and not postgres:
        # Prepared before taking the write lock: the rows, and the rollups of the usual case
        # where every reading is new (recomputed below for those stored when some are not).
        valid.sort(key=lambda r: (r.meter.id, r.timestamp))
        rows = [r.row(source, now) for r in valid]
        planned = rollup_rows(valid)
    if valid or result.rejected:
        # Validation is done and everything from here on writes: on SQLite, take the write lock
        # now (in turn with other writers) and hold it only for the writes.
        await begin_write(session)
    if valid and postgres:
        newest_ts, missed = await _store_postgres(session, valid, source, now)
        rest = [r for r in valid if (r.meter.id, r.timestamp) in missed] if missed else []
        refs = {r.meter.id: r.meter for r in valid}
        newest = {m: (refs[m], ts) for m, ts in newest_ts.items()}
        result.accepted = len(valid) - len(rest)
        await _classify_rest(session, rest, payloads, result, reject, missed)
        if newest:
            await _touch_meters(session, rt, newest, now)
    elif valid:
        inserted = await _insert_readings(session, rows)
        stored = [r for r in valid if (r.meter.id, r.timestamp) in inserted]
        rest = [r for r in valid if (r.meter.id, r.timestamp) not in inserted]
        await _classify_rest(session, rest, payloads, result, reject)
        result.accepted = len(stored)
        if stored:
            await upsert_add_rollups(session, rollup_rows(stored) if rest else planned)
            await _touch_meters(session, rt, _newest(stored), now)

    if result.rejected:
        result.rejected.sort(key=lambda r: r.index)
        session.add_all(dead_letters(result.rejected, source, now))
        await session.flush()
    READINGS_INGESTED.labels(source, "accepted").inc(result.accepted)
    READINGS_INGESTED.labels(source, "duplicate").inc(result.duplicates)
    READINGS_INGESTED.labels(source, "rejected").inc(len(result.rejected))
    return result
