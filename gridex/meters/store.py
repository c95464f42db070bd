"""Where ingest writes: the new readings and their rollups, one way per database.

Both ways insert with ``ON CONFLICT DO NOTHING`` (idempotent on meter and interval end) and add
exactly the inserted rows to the rollups in the same transaction. PostgreSQL gets one statement:
the readings travel as one array per column, and the insert, the rollup sums and their upsert
run server-side (``_PG_INGEST``): the fastest of the ways measured against a raw ``COPY`` of
the same rows (docs/devices.md has the figures). SQLite inserts the rows and upserts rollups
summed in Python, prepared before the write lock is taken.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.db import insert_or_ignore, is_postgres
from gridex.meters.models import MeterReading
from gridex.meters.rollups import add_rollups, pg_rollup_ctes, rollup_rows
from gridex.meters.validation import Reading

Key = tuple[uuid.UUID, datetime]  # (meter id, interval end)


@dataclass(slots=True)
class Stored:
    """What a store did: the newest stored interval end per meter, and the keys it did not
    insert (already stored) with the stored (consumed_wh, produced_wh) when it could see them."""

    newest: dict[uuid.UUID, datetime] = field(default_factory=dict)
    missed: dict[Key, tuple[int, int] | None] = field(default_factory=dict)


@dataclass(slots=True)
class StorePlan:
    """Readings to store, with what can be prepared before the write lock."""

    readings: list[Reading]
    source: str
    received_at: datetime
    postgres: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    rollups: list[dict[str, Any]] = field(default_factory=list)


def plan_store(
    session: AsyncSession, readings: list[Reading], source: str, now: datetime
) -> StorePlan:
    """On SQLite: the rows, and the rollups of the usual case where every reading is new
    (recomputed in ``store`` for those stored when some are not)."""
    plan = StorePlan(readings, source, now, is_postgres(session))
    if readings and not plan.postgres:
        readings.sort(key=lambda r: (r.meter.id, r.timestamp))
        plan.rows = [r.row(source, now) for r in readings]
        plan.rollups = rollup_rows(readings)
    return plan


async def store(session: AsyncSession, plan: StorePlan) -> Stored:
    """Insert what is new and add it to the rollups, in the session's transaction."""
    if not plan.readings:
        return Stored()
    if plan.postgres:
        return await _store_postgres(session, plan.readings, plan.source, plan.received_at)
    inserted = await _insert_readings(session, plan.rows)
    stored = [r for r in plan.readings if (r.meter.id, r.timestamp) in inserted]
    outcome = Stored()
    for r in stored:
        if r.meter.id not in outcome.newest or r.timestamp > outcome.newest[r.meter.id]:
            outcome.newest[r.meter.id] = r.timestamp
    outcome.missed = {
        (r.meter.id, r.timestamp): None
        for r in plan.readings
        if (r.meter.id, r.timestamp) not in inserted
    }
    if stored:
        await add_rollups(session, rollup_rows(stored) if outcome.missed else plan.rollups)
    return outcome


async def _insert_readings(session: AsyncSession, rows: list[dict[str, Any]]) -> set[Key]:
    """Insert what is new (``Reading.row`` dicts); returns the keys actually inserted."""
    table = MeterReading.__table__
    stmt = insert_or_ignore(session, table, conflict=[table.c.meter_id, table.c.timestamp])
    result = await session.execute(stmt.returning(table.c.meter_id, table.c.timestamp), rows)
    return {(m, ts.astimezone(UTC)) for m, ts in result.all()}


async def stored_values(session: AsyncSession, keys: list[Key]) -> dict[Key, tuple[int, int]]:
    """(consumed_wh, produced_wh) of the stored readings among ``keys``."""
    found: dict[Key, tuple[int, int]] = {}
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


# One statement on PostgreSQL: the readings arrive as arrays, the insert reports what is new, and
# the rollups of exactly those rows are summed and upserted server-side (lock order: sorted keys).
_PG_INGEST = (
    """
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
),"""
    + pg_rollup_ctes("ins")
    + """
SELECT true AS stored, meter_id, max("timestamp") AS ts, NULL::int8, NULL::int8
FROM ins GROUP BY meter_id
UNION ALL
SELECT false, s.meter_id, s.ts, r.consumed_wh, r.produced_wh
FROM src s LEFT JOIN meter_readings r ON r.meter_id = s.meter_id AND r."timestamp" = s.ts
WHERE (SELECT count(*) FROM ins) < $15
  AND NOT EXISTS (SELECT 1 FROM ins i WHERE i.meter_id = s.meter_id AND i."timestamp" = s.ts)
"""
)


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
) -> Stored:
    """``store`` on PostgreSQL: one statement of the session's transaction."""
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
    outcome = Stored()
    rows: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
    for stored, meter_id, ts, consumed, produced in rows:
        if stored:
            outcome.newest[meter_id] = ts.astimezone(UTC)
        else:
            # No values: committed by another transaction after this statement's snapshot.
            values = None if consumed is None else (consumed, produced)
            outcome.missed[(meter_id, ts.astimezone(UTC))] = values
    return outcome
