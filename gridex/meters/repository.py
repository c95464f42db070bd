"""Queries of the meters domain. Aggregates read rollups only, never raw readings.

Time ranges are widened to whole 15-minute buckets (``from`` down, ``to`` up): a bucket or
reading belongs to a range when its interval starts in ``[from, to)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.meters.ingest import GRANULARITIES, bucket_start, next_bucket
from gridex.meters.models import Granularity, Meter, MeterReading, MeterRollup, MeterStatus

QUARTER = timedelta(minutes=15)


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


@dataclass(frozen=True, slots=True)
class Sums:
    consumed_wh: int = 0
    produced_wh: int = 0
    readings: int = 0
    peak_w: int | None = None
    min_w: int | None = None
    voltage_mv_sum: int = 0
    voltage_count: int = 0
    current_ma_sum: int = 0
    current_count: int = 0


_SUM_COLUMNS = (
    func.coalesce(func.sum(MeterRollup.consumed_wh), 0),
    func.coalesce(func.sum(MeterRollup.produced_wh), 0),
    func.coalesce(func.sum(MeterRollup.readings), 0),
    func.max(MeterRollup.peak_w),
    func.min(MeterRollup.min_w),
    func.coalesce(func.sum(MeterRollup.voltage_mv_sum), 0),
    func.coalesce(func.sum(MeterRollup.voltage_count), 0),
    func.coalesce(func.sum(MeterRollup.current_ma_sum), 0),
    func.coalesce(func.sum(MeterRollup.current_count), 0),
)


def _sums(row: Sequence[Any]) -> Sums:
    return Sums(
        int(row[0]),
        int(row[1]),
        int(row[2]),
        None if row[3] is None else int(row[3]),
        None if row[4] is None else int(row[4]),
        int(row[5]),
        int(row[6]),
        int(row[7]),
        int(row[8]),
    )


async def meter_sums(
    session: AsyncSession, meter_id: uuid.UUID, start: datetime, end: datetime
) -> Sums:
    row = (
        await session.execute(
            select(*_SUM_COLUMNS).where(MeterRollup.meter_id == meter_id, cover_clause(start, end))
        )
    ).one()
    return _sums(row)


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


async def rollup_points(
    session: AsyncSession,
    meter_id: uuid.UUID,
    granularity: str,
    start: datetime,
    end: datetime,
    *,
    limit: int,
) -> list[MeterRollup]:
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
    return list(rows)


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
    row = (
        await session.execute(
            select(*_SUM_COLUMNS).where(
                MeterRollup.meter_id.in_(region_meters(region)), cover_clause(start, end)
            )
        )
    ).one()
    return _sums(row)


async def region_peak(
    session: AsyncSession, region: str, start: datetime, end: datetime
) -> tuple[datetime | None, int]:
    """The 15-minute bucket with the highest summed consumption: (start, Wh)."""
    total = func.sum(MeterRollup.consumed_wh)
    row = (
        await session.execute(
            select(MeterRollup.bucket_start, total)
            .where(
                MeterRollup.meter_id.in_(region_meters(region)),
                MeterRollup.granularity == Granularity.m15,
                MeterRollup.bucket_start >= start,
                MeterRollup.bucket_start < end,
            )
            .group_by(MeterRollup.bucket_start)
            .order_by(total.desc(), MeterRollup.bucket_start)
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return None, 0
    return row[0], int(row[1])


async def top_consumers(
    session: AsyncSession, region: str, start: datetime, end: datetime, limit: int
) -> list[tuple[uuid.UUID, str, uuid.UUID | None, int, int]]:
    consumed = func.sum(MeterRollup.consumed_wh)
    rows = await session.execute(
        select(Meter.id, Meter.serial, Meter.owner_id, consumed, func.sum(MeterRollup.produced_wh))
        .join(MeterRollup, MeterRollup.meter_id == Meter.id)
        .where(Meter.region == region, Meter.deleted_at.is_(None), cover_clause(start, end))
        .group_by(Meter.id, Meter.serial, Meter.owner_id)
        .order_by(consumed.desc(), Meter.serial)
        .limit(limit)
    )
    return [(m, s, o, int(c), int(p)) for m, s, o, c, p in rows]


async def region_latest_quarter(
    session: AsyncSession, region: str, since: datetime
) -> tuple[datetime, int, int, int] | None:
    """The newest quarter with data since ``since``: (start, consumed, produced, meters)."""
    row = (
        await session.execute(
            select(
                MeterRollup.bucket_start,
                func.sum(MeterRollup.consumed_wh),
                func.sum(MeterRollup.produced_wh),
                func.count(),
            )
            .where(
                MeterRollup.meter_id.in_(region_meters(region)),
                MeterRollup.granularity == Granularity.m15,
                MeterRollup.bucket_start >= since,
            )
            .group_by(MeterRollup.bucket_start)
            .order_by(MeterRollup.bucket_start.desc())
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return None
    return row[0], int(row[1]), int(row[2]), int(row[3])


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
