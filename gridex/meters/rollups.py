"""Rollups: per (meter, granularity, bucket) sums of raw readings, and the one place writing them.

Which buckets a reading counts in: its hour, day and month always; a quarter-hour rollup row only
when the reading is shorter than 15 minutes. A 15-minute reading is a quarter-hour bucket on its
own: its row in ``meter_readings``, found by the primary key (meter, interval end), holds exactly
what a rollup row would, so the repository reads those quarters from the raw table (the same index
range scan, equal by construction) and rollup rows are kept where they save work: hours, days,
months, and quarters of meters that report more often.

Ingest adds rows (``add_rollups``, or the PostgreSQL ingest statement built from
``pg_rollup_ctes``), corrections rebuild the buckets around a reading (``rebuild_rollups``); both
combine columns by ``SUMMED``/``HIGHEST``/``LOWEST``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import case, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.db import conflict_insert
from gridex.meters.models import Granularity, MeterReading, MeterRollup

QUARTER = timedelta(minutes=15)
# A reading of this length is its own quarter-hour bucket; shorter ones are summed into rollups.
QUARTER_MINUTES = 15
GRANULARITIES = (Granularity.m15, Granularity.h1, Granularity.d1, Granularity.mo1)

# How the columns of two buckets combine (a finer bucket into a coarser one, or new readings into
# a stored bucket): the one rule behind ``Sums.merge``, ``add_rollups`` and the PostgreSQL SQL.
SUMMED = (
    "consumed_wh",
    "produced_wh",
    "readings",
    "voltage_mv_sum",
    "voltage_count",
    "current_ma_sum",
    "current_count",
)
HIGHEST = ("peak_w",)
LOWEST = ("min_w",)


def has_quarter_rollup(interval_minutes: int) -> bool:
    """Whether a reading of this length is summed into a quarter-hour rollup row."""
    return interval_minutes < QUARTER_MINUTES


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
        return start + QUARTER
    if granularity == Granularity.h1:
        return start + timedelta(hours=1)
    if granularity == Granularity.d1:
        return start + timedelta(days=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


class ReadingValues(Protocol):
    """What a rollup takes from a reading (a validated ``Reading`` or a stored ``MeterReading``)."""

    @property
    def meter_id(self) -> uuid.UUID: ...
    @property
    def timestamp(self) -> datetime: ...
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
class Sums:
    """The sums of the readings in a bucket (or a range of buckets), as a rollup row keeps them.

    ``peak_w`` is the highest power seen (peak demand when sent, else average consumption power),
    ``min_w`` the lowest average power (None without readings); voltage and current are summed
    in mV and mA with their counts, for averages.
    """

    consumed_wh: int = 0
    produced_wh: int = 0
    readings: int = 0
    peak_w: int = 0
    min_w: int | None = None
    voltage_mv_sum: int = 0
    voltage_count: int = 0
    current_ma_sum: int = 0
    current_count: int = 0

    @classmethod
    def of_rollup(cls, rollup: MeterRollup) -> Sums:
        return cls(*(getattr(rollup, name) for name in COLUMNS))

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

    def merge(self, other: Sums) -> None:
        """Add the sums of ``other`` (a finer bucket inside this one, or a neighbour)."""
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


# The columns of a rollup row (and the fields of ``Sums``), in order.
COLUMNS = (
    "consumed_wh",
    "produced_wh",
    "readings",
    "peak_w",
    "min_w",
    "voltage_mv_sum",
    "voltage_count",
    "current_ma_sum",
    "current_count",
)
_RANK = {g.value: i for i, g in enumerate(GRANULARITIES)}


def _sums_at(
    table: dict[tuple[uuid.UUID, datetime], Sums], key: tuple[uuid.UUID, datetime]
) -> Sums:
    sums = table.get(key)
    if sums is None:
        sums = table[key] = Sums()
    return sums


def rollup_rows(readings: Iterable[ReadingValues]) -> list[dict[str, Any]]:
    """Per (meter, granularity, bucket) sums of ``readings`` in lock order.

    Each reading is added to its hour, and to its quarter when it has a quarter rollup (its
    interval divides 15 minutes, so it never straddles two buckets); days and months are merged
    from the hours.
    """
    hours: dict[tuple[uuid.UUID, datetime], Sums] = {}
    quarters: dict[tuple[uuid.UUID, datetime], Sums] = {}
    for r in readings:
        start = r.timestamp - timedelta(minutes=r.interval_minutes)
        _sums_at(hours, (r.meter_id, start.replace(minute=0, second=0, microsecond=0))).add(r)
        if has_quarter_rollup(r.interval_minutes):
            quarter = start.replace(
                minute=start.minute - start.minute % 15, second=0, microsecond=0
            )
            _sums_at(quarters, (r.meter_id, quarter)).add(r)
    buckets: dict[tuple[uuid.UUID, str, datetime], Sums] = {}
    for (meter_id, quarter), sums in quarters.items():
        buckets[(meter_id, Granularity.m15.value, quarter)] = sums
    for (meter_id, hour), sums in hours.items():
        buckets[(meter_id, Granularity.h1.value, hour)] = sums
        day = hour.replace(hour=0)
        for key in ((meter_id, "1d", day), (meter_id, "1mo", day.replace(day=1))):
            coarse = buckets.get(key)
            if coarse is None:
                coarse = buckets[key] = Sums()
            coarse.merge(sums)
    # Lock order: per meter, finest granularity first (as corrections rebuild them), then time.
    ordered = sorted(buckets.items(), key=lambda item: (item[0][0], _RANK[item[0][1]], item[0][2]))
    return [sums.row(meter_id, g, start) for (meter_id, g, start), sums in ordered]


# --- writers ---------------------------------------------------------------------------------


async def add_rollups(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Add ``rows`` (from ``rollup_rows``) into the rollups: sums add up, peaks and minima widen."""
    if not rows:
        return
    table = MeterRollup.__table__
    stmt = conflict_insert(session, table)
    ex = stmt.excluded
    c = table.c
    merged: dict[str, Any] = {name: c[name] + ex[name] for name in SUMMED}
    merged.update({n: case((ex[n] > c[n], ex[n]), else_=c[n]) for n in HIGHEST})
    merged.update({n: case((ex[n] < c[n], ex[n]), else_=c[n]) for n in LOWEST})
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.meter_id, c.granularity, c.bucket_start], set_=merged
    )
    await session.execute(stmt, list(rows))


async def _replace(
    session: AsyncSession,
    meter_id: uuid.UUID,
    granularity: str,
    start: datetime,
    end: datetime,
    rows: Sequence[dict[str, Any]],
) -> None:
    """The ``granularity`` rows of ``[start, end)`` become ``rows`` (empty buckets: no row)."""
    await session.execute(
        delete(MeterRollup).where(
            MeterRollup.meter_id == meter_id,
            MeterRollup.granularity == granularity,
            MeterRollup.bucket_start >= start,
            MeterRollup.bucket_start < end,
        )
    )
    kept = [row for row in rows if row["readings"]]
    if kept:
        await session.execute(insert(MeterRollup), kept)


async def _merged_from(
    session: AsyncSession, meter_id: uuid.UUID, finer: str, granularity: str, start: datetime
) -> dict[str, Any]:
    """The bucket of ``granularity`` at ``start``, merged from its ``finer`` rollup rows."""
    end = next_bucket(granularity, start)
    sums = Sums()
    for part in await session.scalars(
        select(MeterRollup).where(
            MeterRollup.meter_id == meter_id,
            MeterRollup.granularity == finer,
            MeterRollup.bucket_start >= start,
            MeterRollup.bucket_start < end,
        )
    ):
        sums.merge(Sums.of_rollup(part))
    return sums.row(meter_id, granularity, start)


async def rebuild_rollups(session: AsyncSession, meter_id: uuid.UUID, instant: datetime) -> None:
    """Rebuild the buckets containing ``instant`` exactly, after a stored reading changed.

    The hour and its quarters come from the hour's raw readings (at most 60), the day from its
    hours and the month from its days; each level is written before the coarser one reads it.
    """
    hour = bucket_start(Granularity.h1, instant)
    next_hour = next_bucket(Granularity.h1, hour)
    readings = await session.scalars(
        select(MeterReading).where(
            MeterReading.meter_id == meter_id,
            MeterReading.timestamp > hour,
            MeterReading.timestamp <= next_hour,
        )
    )
    rows = rollup_rows(readings)
    for g in (Granularity.m15, Granularity.h1):
        level = [row for row in rows if row["granularity"] == g]
        await _replace(session, meter_id, g, hour, next_hour, level)
    finer: str = Granularity.h1
    for g in (Granularity.d1, Granularity.mo1):
        start = bucket_start(g, instant)
        row = await _merged_from(session, meter_id, finer, g, start)
        await _replace(session, meter_id, g, start, next_bucket(g, start), [row])
        finer = g


# --- the PostgreSQL ingest statement's rollup part -------------------------------------------


# The aggregates that merge rollup rows, and the upsert that adds new sums to a stored row.
_PG_MERGE = ", ".join(
    [f"sum({n})::int8 AS {n}" for n in SUMMED]
    + [f"max({n}) AS {n}" for n in HIGHEST]
    + [f"min({n}) AS {n}" for n in LOWEST]
)

_PG_UPSERT = ",\n        ".join(
    [f"{n} = meter_rollups.{n} + excluded.{n}" for n in SUMMED]
    + [f"{n} = GREATEST(meter_rollups.{n}, excluded.{n})" for n in HIGHEST]
    + [f"{n} = LEAST(meter_rollups.{n}, excluded.{n})" for n in LOWEST]
)
_PG_COLUMNS = ", ".join(COLUMNS)
# Per-reading values of a rollup, as ``Sums.add`` computes them, from the rows of CTE ``q``.
_PG_READING_SUMS = """sum(consumed_wh)::int8 AS consumed_wh,
           sum(produced_wh)::int8 AS produced_wh, count(*) AS readings, max(peak) AS peak_w,
           min(power) AS min_w, COALESCE(sum(voltage_mv), 0)::int8 AS voltage_mv_sum,
           count(voltage_mv) AS voltage_count, COALESCE(sum(current_ma), 0)::int8 AS current_ma_sum,
           count(current_ma) AS current_count"""


def pg_rollup_ctes(inserted: str) -> str:
    """CTEs that add the rows of CTE ``inserted`` (readings just stored) into the rollups.

    The same buckets as ``rollup_rows``: a quarter row only for readings shorter than a quarter,
    hours from every reading, days from hours, months from days; written in lock order.
    """
    return f"""
q AS (
    SELECT meter_id, interval_minutes,
           date_bin(
               '15 minutes', "timestamp" - make_interval(mins => interval_minutes),
               TIMESTAMPTZ '2000-01-01 00:00:00+00'
           ) AS bucket,
           consumed_wh, produced_wh,
           consumed_wh * (60 / interval_minutes) AS power,
           GREATEST(consumed_wh * (60 / interval_minutes), COALESCE(peak_demand_w, 0)) AS peak,
           round(voltage * 1000)::int8 AS voltage_mv,
           round("current" * 1000)::int8 AS current_ma
    FROM {inserted}
),
m15 AS (
    SELECT meter_id, bucket, {_PG_READING_SUMS}
    FROM q WHERE interval_minutes < {QUARTER_MINUTES} GROUP BY meter_id, bucket
),
h1 AS (
    SELECT meter_id, date_trunc('hour', bucket, 'UTC') AS bucket, {_PG_READING_SUMS}
    FROM q GROUP BY 1, 2
),
d1 AS (
    SELECT meter_id, date_trunc('day', bucket, 'UTC') AS bucket, {_PG_MERGE} FROM h1 GROUP BY 1, 2
),
mo1 AS (
    SELECT meter_id, date_trunc('month', bucket, 'UTC') AS bucket, {_PG_MERGE}
    FROM d1 GROUP BY 1, 2
),
rollups AS (
    INSERT INTO meter_rollups (meter_id, granularity, bucket_start, {_PG_COLUMNS})
    SELECT meter_id, granularity, bucket, {_PG_COLUMNS} FROM (
        SELECT meter_id, '15m' AS granularity, 0 AS rank, bucket, {_PG_COLUMNS} FROM m15
        UNION ALL SELECT meter_id, '1h', 1, bucket, {_PG_COLUMNS} FROM h1
        UNION ALL SELECT meter_id, '1d', 2, bucket, {_PG_COLUMNS} FROM d1
        UNION ALL SELECT meter_id, '1mo', 3, bucket, {_PG_COLUMNS} FROM mo1
    ) AS b
    -- Lock order: per meter, finest granularity first (as corrections rebuild them), then time.
    ORDER BY meter_id, rank, bucket
    ON CONFLICT (meter_id, granularity, bucket_start) DO UPDATE SET
        {_PG_UPSERT}
)"""
