"""Queries of the meters domain. Aggregates read buckets, never long scans of raw readings.

Time ranges are widened to whole 15-minute buckets (``from`` down, ``to`` up): a bucket or
reading belongs to a range when its interval starts in ``[from, to)``. A quarter-hour bucket is
a rollup row (readings shorter than 15 minutes) plus the 15-minute reading of that quarter, read
from ``meter_readings`` by its primary key (see ``rollups``); ``quarter_sums`` and the
``_quarter_readings`` filter are where the two are put together.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.meters.models import Granularity, Meter, MeterReading, MeterRollup, MeterStatus
from gridex.meters.rollups import (
    COLUMNS,
    GRANULARITIES,
    HIGHEST,
    LOWEST,
    QUARTER,
    QUARTER_MINUTES,
    Sums,
    bucket_start,
    next_bucket,
)

# One meter, or a query of meter ids (a region's, an owner's).
Meters = uuid.UUID | Select[Any]


def floor_quarter(ts: datetime) -> datetime:
    return bucket_start(Granularity.m15, ts)


def ceil_quarter(ts: datetime) -> datetime:
    start = floor_quarter(ts)
    return start if start == ts else start + QUARTER


def cover(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """Split ``[start, end)`` (15-minute aligned) into the fewest whole rollup buckets.

    Returns ``(granularity, first bucket start, end)`` segments, coarsest buckets in the middle
    and finer ones at the edges, so a year is ~12 month rows plus a few days, hours and quarters.
    """
    segments: list[tuple[str, datetime, datetime]] = []

    def split(a: datetime, b: datetime, levels: Sequence[Granularity]) -> None:
        if a >= b or not levels:
            return
        g, finer = levels[0], levels[1:]
        first = bucket_start(g, a)
        if first < a:
            first = next_bucket(g, first)
        last = bucket_start(g, b)
        if first >= last:
            split(a, b, finer)
            return
        segments.append((g.value, first, last))
        split(a, first, finer)
        split(last, b, finer)

    split(start, end, tuple(reversed(GRANULARITIES)))
    return segments


def cover_clause(start: datetime, end: datetime) -> ColumnElement[bool]:
    parts = [
        and_(
            MeterRollup.granularity == g,
            MeterRollup.bucket_start >= s,
            MeterRollup.bucket_start < e,
        )
        for g, s, e in cover(start, end)
    ]
    return or_(*parts) if parts else MeterRollup.granularity == "none"


def _aggregate(name: str) -> ColumnElement[Any]:
    """Rollup rows added up in SQL, by the rule of ``Sums.merge``; ``min_w`` stays NULL (None)
    without rows."""
    column = MeterRollup.__table__.c[name]
    if name in LOWEST:
        return func.min(column)
    return func.coalesce(func.max(column) if name in HIGHEST else func.sum(column), 0)


_SUM_COLUMNS = tuple(_aggregate(name) for name in COLUMNS)


def _sums(row: Sequence[Any]) -> Sums:
    """``Sums`` of a row of ``_SUM_COLUMNS``."""
    c, p, n, peak, low, v_sum, v_count, i_sum, i_count = row
    low = None if low is None else int(low)
    return Sums(
        int(c), int(p), int(n), int(peak), low, int(v_sum), int(v_count), int(i_sum), int(i_count)
    )


def _of(column: Any, meters: Meters) -> ColumnElement[bool]:
    result: ColumnElement[bool] = (
        column == meters if isinstance(meters, uuid.UUID) else column.in_(meters)
    )
    return result


def _quarter_readings(meters: Meters, start: datetime, end: datetime | None) -> Select[Any]:
    """The readings that are a quarter-hour bucket each, for buckets starting in [start, end):
    their interval end is one quarter later, so the bounds move instead of the column."""
    query = select(MeterReading).where(
        _of(MeterReading.meter_id, meters),
        MeterReading.interval_minutes == QUARTER_MINUTES,
        MeterReading.timestamp >= start + QUARTER,
    )
    return query if end is None else query.where(MeterReading.timestamp < end + QUARTER)


async def quarter_sums(
    session: AsyncSession,
    meters: Meters,
    start: datetime,
    end: datetime | None = None,
    *,
    limit: int | None = None,
) -> list[tuple[uuid.UUID, datetime, Sums]]:
    """The quarter-hour buckets starting in ``[start, end)`` that have readings, by time then
    meter: rollup rows and 15-minute readings added together. ``limit``: the first buckets only
    (for one meter)."""
    rollups = (
        select(MeterRollup)
        .where(
            _of(MeterRollup.meter_id, meters),
            MeterRollup.granularity == Granularity.m15,
            MeterRollup.bucket_start >= start,
        )
        .order_by(MeterRollup.bucket_start)
    )
    readings = _quarter_readings(meters, start, end).order_by(MeterReading.timestamp)
    if end is not None:
        rollups = rollups.where(MeterRollup.bucket_start < end)
    if limit is not None:
        rollups, readings = rollups.limit(limit), readings.limit(limit)
    buckets: dict[tuple[datetime, uuid.UUID], Sums] = {}
    for rollup in await session.scalars(rollups):
        buckets[(rollup.bucket_start, rollup.meter_id)] = Sums.of_rollup(rollup)
    for reading in await session.scalars(readings):
        key = (reading.timestamp - QUARTER, reading.meter_id)
        buckets.setdefault(key, Sums()).add(reading)
    ordered = sorted(buckets.items())[:limit]
    return [(meter_id, start, sums) for (start, meter_id), sums in ordered]


async def _cover_sums(
    session: AsyncSession, meters: Meters, start: datetime, end: datetime
) -> dict[uuid.UUID, Sums]:
    """Per meter, the sums of ``[start, end)`` from the fewest buckets (``cover``)."""
    totals: dict[uuid.UUID, Sums] = defaultdict(Sums)
    rows = await session.execute(
        select(MeterRollup.meter_id, *_SUM_COLUMNS)
        .where(_of(MeterRollup.meter_id, meters), cover_clause(start, end))
        .group_by(MeterRollup.meter_id)
    )
    for meter_id, *sums in rows:
        totals[meter_id].merge(_sums(sums))
    # Quarters are only ever at the edges of a cover: a few readings per meter.
    edges = [
        and_(MeterReading.timestamp >= s + QUARTER, MeterReading.timestamp < e + QUARTER)
        for g, s, e in cover(start, end)
        if g == Granularity.m15
    ]
    if edges:
        for reading in await session.scalars(
            _quarter_readings(meters, start, end).where(or_(*edges))
        ):
            totals[reading.meter_id].add(reading)
    return totals


async def meters_sums(
    session: AsyncSession, meters: Meters, start: datetime, end: datetime
) -> dict[uuid.UUID, Sums]:
    """Per meter with readings, the sums of ``[start, end)`` (15-minute aligned)."""
    return dict(await _cover_sums(session, meters, start, end))


async def meter_sums(
    session: AsyncSession, meter_id: uuid.UUID, start: datetime, end: datetime
) -> Sums:
    return (await _cover_sums(session, meter_id, start, end)).get(meter_id, Sums())


async def totals_by_meter(
    session: AsyncSession, meter_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int, int]]:
    """All-time (consumed_wh, produced_wh, readings) per meter, from the monthly rollups."""
    if not meter_ids:
        return {}
    rows = await session.execute(
        select(
            MeterRollup.meter_id,
            func.sum(MeterRollup.consumed_wh),
            func.sum(MeterRollup.produced_wh),
            func.sum(MeterRollup.readings),
        )
        .where(MeterRollup.meter_id.in_(meter_ids), MeterRollup.granularity == Granularity.mo1)
        .group_by(MeterRollup.meter_id)
    )
    return {m: (int(c), int(p), int(n)) for m, c, p, n in rows}


async def latest_readings(
    session: AsyncSession, meters: Sequence[Meter]
) -> dict[uuid.UUID, MeterReading]:
    keys = [(m.id, m.last_reading_at) for m in meters if m.last_reading_at is not None]
    if not keys:
        return {}
    rows = await session.scalars(
        select(MeterReading).where(
            or_(*[and_(MeterReading.meter_id == m, MeterReading.timestamp == ts) for m, ts in keys])
        )
    )
    return {r.meter_id: r for r in rows}


async def latest_reading(session: AsyncSession, meter_id: uuid.UUID) -> MeterReading | None:
    result: MeterReading | None = await session.scalar(
        select(MeterReading)
        .where(MeterReading.meter_id == meter_id)
        .order_by(MeterReading.timestamp.desc())
        .limit(1)
    )
    return result


async def raw_readings(
    session: AsyncSession,
    meter_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    limit: int,
) -> list[MeterReading]:
    """Readings whose interval starts in ``[start, end)`` (both 15-minute aligned)."""
    rows = await session.scalars(
        select(MeterReading)
        .where(
            MeterReading.meter_id == meter_id,
            MeterReading.timestamp > start,
            MeterReading.timestamp <= end,
        )
        .order_by(MeterReading.timestamp)
        .limit(limit)
    )
    return list(rows)


async def bucket_series(
    session: AsyncSession,
    meter_id: uuid.UUID,
    granularity: str,
    start: datetime,
    end: datetime,
    *,
    limit: int,
) -> list[tuple[datetime, Sums]]:
    """The meter's buckets of ``granularity`` starting in ``[start, end)`` that have readings."""
    if granularity == Granularity.m15:
        quarters = await quarter_sums(session, meter_id, start, end, limit=limit)
        return [(bucket, sums) for _, bucket, sums in quarters]
    rows = await session.scalars(
        select(MeterRollup)
        .where(
            MeterRollup.meter_id == meter_id,
            MeterRollup.granularity == granularity,
            MeterRollup.bucket_start >= start,
            MeterRollup.bucket_start < end,
        )
        .order_by(MeterRollup.bucket_start)
        .limit(limit)
    )
    return [(row.bucket_start, Sums.of_rollup(row)) for row in rows]


async def rollup_series(
    session: AsyncSession,
    meter_ids: Sequence[uuid.UUID],
    granularity: str,
    start: datetime,
    end: datetime,
) -> list[tuple[datetime, int, int]]:
    """(bucket start, consumed_wh, produced_wh) summed over ``meter_ids``, by bucket."""
    rows = await session.execute(
        select(
            MeterRollup.bucket_start,
            func.sum(MeterRollup.consumed_wh),
            func.sum(MeterRollup.produced_wh),
        )
        .where(
            MeterRollup.meter_id.in_(meter_ids),
            MeterRollup.granularity == granularity,
            MeterRollup.bucket_start >= start,
            MeterRollup.bucket_start < end,
        )
        .group_by(MeterRollup.bucket_start)
        .order_by(MeterRollup.bucket_start)
    )
    return [(ts, int(c), int(p)) for ts, c, p in rows]


def select_count(query: Select[Any]) -> Select[Any]:
    """The number of rows of ``query``."""
    return select(func.count()).select_from(query.subquery())


def region_meters(region: str) -> Select[uuid.UUID]:
    return select(Meter.id).where(Meter.region == region, Meter.deleted_at.is_(None))


async def region_counts(session: AsyncSession, region: str) -> tuple[int, int, int]:
    """(meters, active, online) of a region."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((Meter.status == MeterStatus.active, 1), else_=0)), 0),
                func.coalesce(func.sum(case((Meter.online.is_(True), 1), else_=0)), 0),
            ).where(Meter.region == region, Meter.deleted_at.is_(None))
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def region_sums(session: AsyncSession, region: str, start: datetime, end: datetime) -> Sums:
    total = Sums()
    for sums in (await _cover_sums(session, region_meters(region), start, end)).values():
        total.merge(sums)
    return total


async def region_peak(
    session: AsyncSession, region: str, start: datetime, end: datetime
) -> tuple[datetime | None, int]:
    """The quarter-hour bucket with the highest summed consumption: (start, Wh)."""
    meters = region_meters(region)
    totals: dict[datetime, int] = defaultdict(int)
    rollups = await session.execute(
        select(MeterRollup.bucket_start, func.sum(MeterRollup.consumed_wh))
        .where(
            MeterRollup.meter_id.in_(meters),
            MeterRollup.granularity == Granularity.m15,
            MeterRollup.bucket_start >= start,
            MeterRollup.bucket_start < end,
        )
        .group_by(MeterRollup.bucket_start)
    )
    for bucket, consumed in rollups:
        totals[bucket] += int(consumed)
    quarters = _quarter_readings(meters, start, end).subquery()
    readings = await session.execute(
        select(quarters.c.timestamp, func.sum(quarters.c.consumed_wh)).group_by(
            quarters.c.timestamp
        )
    )
    for interval_end, consumed in readings:
        totals[interval_end - QUARTER] += int(consumed)
    if not totals:
        return None, 0
    peak = min(totals, key=lambda bucket: (-totals[bucket], bucket))
    return peak, totals[peak]


async def top_consumers(
    session: AsyncSession, region: str, start: datetime, end: datetime, limit: int
) -> list[tuple[uuid.UUID, str, uuid.UUID | None, int, int]]:
    """The region's meters with readings in ``[start, end)``, by consumption (then serial)."""
    totals = await _cover_sums(session, region_meters(region), start, end)
    if not totals:
        return []
    meters = await session.execute(
        select(Meter.id, Meter.serial, Meter.owner_id).where(Meter.id.in_(totals))
    )
    ranked = sorted(meters, key=lambda m: (-totals[m.id].consumed_wh, m.serial))[:limit]
    return [
        (m.id, m.serial, m.owner_id, totals[m.id].consumed_wh, totals[m.id].produced_wh)
        for m in ranked
    ]


async def region_latest_quarter(
    session: AsyncSession, region: str, since: datetime
) -> tuple[datetime, int, int, int] | None:
    """The newest quarter with data since ``since``: (start, consumed, produced, meters)."""
    quarters = await quarter_sums(session, region_meters(region), since)
    if not quarters:
        return None
    newest = quarters[-1][1]
    latest = [sums for _, bucket, sums in quarters if bucket == newest]
    consumed = sum(s.consumed_wh for s in latest)
    return newest, consumed, sum(s.produced_wh for s in latest), len(latest)


async def owners_meter_totals(
    session: AsyncSession, owner_ids: Select[uuid.UUID]
) -> tuple[int, int, int]:
    """(meters, consumed_wh, produced_wh) of the live meters owned by ``owner_ids``."""
    meters = select(Meter.id).where(Meter.owner_id.in_(owner_ids), Meter.deleted_at.is_(None))
    count = await session.scalar(select(func.count()).select_from(meters.subquery()))
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(MeterRollup.consumed_wh), 0),
                func.coalesce(func.sum(MeterRollup.produced_wh), 0),
            ).where(MeterRollup.meter_id.in_(meters), MeterRollup.granularity == Granularity.mo1)
        )
    ).one()
    return int(count or 0), int(row[0]), int(row[1])


async def owns_meter(session: AsyncSession, owner_id: uuid.UUID, meter_id: uuid.UUID) -> bool:
    """Whether ``meter_id`` is a live (not deleted) meter of ``owner_id``."""
    found = await session.scalar(
        select(Meter.id).where(
            Meter.id == meter_id, Meter.owner_id == owner_id, Meter.deleted_at.is_(None)
        )
    )
    return found is not None
