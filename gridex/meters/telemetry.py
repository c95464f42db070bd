"""Read side of telemetry: series, stats, analytics, comparisons and region views.

Everything coarser than raw reads buckets (``repository.cover`` picks the fewest): rollup rows,
and for quarter-hours of 15-minute readings the readings themselves (see ``rollups``);
``interval=raw`` and ``latest`` read raw readings.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.errors import NotFound, ValidationFailed
from gridex.core.runtime import Runtime
from gridex.core.units import wh_to_kwh
from gridex.meters import repository as repo
from gridex.meters.models import Granularity, Meter, MeterReading
from gridex.meters.rollups import QUARTER, bucket_start, next_bucket
from gridex.meters.schemas import (
    AnalyticsOut,
    CompareOut,
    ConsumptionAnalytics,
    EnvironmentalImpact,
    Interval,
    Period,
    PeriodTotals,
    PointOut,
    PointsOut,
    RealtimeOut,
    RegionStatsOut,
    StatsOut,
    TopConsumerOut,
    TopConsumersOut,
    UsagePatterns,
)

DEFAULT_SPAN = {
    "raw": timedelta(days=1),
    "15m": timedelta(days=1),
    "1h": timedelta(days=7),
    "1d": timedelta(days=90),
    "1mo": timedelta(days=731),
}
MAX_RANGE = timedelta(days=3660)


def _round(value: Decimal | float, places: str = "0.001") -> float:
    return float(Decimal(str(value)).quantize(Decimal(places), rounding=ROUND_HALF_EVEN))


def time_range(
    rt: Runtime, start: datetime | None, end: datetime | None, span: timedelta
) -> tuple[datetime, datetime]:
    """``[from, to)`` widened to whole quarters; defaults: to = now, from = to - span."""
    end = end or rt.clock.now()
    start = start or end - span
    if start >= end:
        raise ValidationFailed("from must be before to")
    if end - start > MAX_RANGE:
        raise ValidationFailed("The range is longer than 10 years")
    return repo.floor_quarter(start), repo.ceil_quarter(end)


async def latest(session: AsyncSession, meter: Meter) -> MeterReading:
    reading = await repo.latest_reading(session, meter.id)
    if reading is None:
        raise NotFound("The meter has no readings yet")
    return reading


def _point(start: datetime, consumed: int, produced: int, peak_w: int) -> PointOut:
    return PointOut(
        start=start,
        consumed_kwh=wh_to_kwh(consumed),
        produced_kwh=wh_to_kwh(produced),
        net_kwh=wh_to_kwh(consumed - produced),
        peak_kw=wh_to_kwh(peak_w),
    )


async def points(
    session: AsyncSession,
    rt: Runtime,
    meter: Meter,
    interval: Interval,
    start: datetime | None,
    end: datetime | None,
    after: datetime | None,
    limit: int,
) -> PointsOut:
    """A time series of the meter; raw reads readings, every other interval reads buckets."""
    a, b = time_range(rt, start, end, DEFAULT_SPAN[interval])
    out: list[PointOut] = []
    if interval == "raw":
        if after is not None:
            # Cursor on the interval start: readings that start after it.
            a = max(a, after)
        rows = await repo.raw_readings(session, meter.id, a, b, limit=limit + 1)
        for r in rows[:limit]:
            power = r.consumed_wh * (60 // r.interval_minutes)
            out.append(
                _point(
                    r.timestamp - timedelta(minutes=r.interval_minutes),
                    r.consumed_wh,
                    r.produced_wh,
                    max(power, r.peak_demand_w or 0),
                )
            )
        more = len(rows) > limit
    else:
        first = bucket_start(interval, a)
        if after is not None:
            first = max(first, next_bucket(interval, bucket_start(interval, after)))
        buckets = await repo.bucket_series(session, meter.id, interval, first, b, limit=limit + 1)
        for start_at, sums in buckets[:limit]:
            out.append(_point(start_at, sums.consumed_wh, sums.produced_wh, sums.peak_w))
        more = len(buckets) > limit
    return PointsOut(
        meter_id=meter.id,
        interval=interval,
        points=out,
        next_after=out[-1].start if more and out else None,
    )


async def stats(
    session: AsyncSession, rt: Runtime, meter: Meter, start: datetime | None, end: datetime | None
) -> StatsOut:
    a, b = time_range(rt, start, end, timedelta(days=30))
    s = await repo.meter_sums(session, meter.id, a, b)
    n = s.readings
    return StatsOut(
        meter_id=meter.id,
        period=Period(start=a, end=b),
        readings=n,
        total_consumed_kwh=wh_to_kwh(s.consumed_wh),
        total_produced_kwh=wh_to_kwh(s.produced_wh),
        net_consumption_kwh=wh_to_kwh(s.consumed_wh - s.produced_wh),
        average_consumed_kwh_per_reading=_round(Decimal(s.consumed_wh) / n / 1000) if n else None,
        average_produced_kwh_per_reading=_round(Decimal(s.produced_wh) / n / 1000) if n else None,
        max_power_kw=wh_to_kwh(s.peak_w) if n and s.peak_w is not None else None,
        min_power_kw=wh_to_kwh(s.min_w) if n and s.min_w is not None else None,
        average_voltage=_round(Decimal(s.voltage_mv_sum) / s.voltage_count / 1000, "0.01")
        if s.voltage_count
        else None,
        average_current=_round(Decimal(s.current_ma_sum) / s.current_count / 1000, "0.01")
        if s.current_count
        else None,
    )


def _efficiency(average_w: Decimal, peak_w: int) -> str | None:
    """A letter from the load factor (average / peak power): a flat load is efficient for the
    grid, a peaky one is not. None without data."""
    if peak_w <= 0:
        return None
    load_factor = average_w / peak_w
    for letter, threshold in (("A", "0.6"), ("B", "0.45"), ("C", "0.3"), ("D", "0.15")):
        if load_factor >= Decimal(threshold):
            return letter
    return "E"


async def analytics(
    session: AsyncSession, rt: Runtime, meter: Meter, start: datetime | None, end: datetime | None
) -> AnalyticsOut:
    """Totals from the rollup cover; everything else from the hourly rollups (UTC hours), over
    the hours that have readings, not the whole window: a week of data in a 30-day window
    averages over that week. docs/devices.md defines each figure."""
    a, b = time_range(rt, start, end, timedelta(days=30))
    s = await repo.meter_sums(session, meter.id, a, b)
    hourly = await repo.rollup_series(
        session, [meter.id], Granularity.h1, bucket_start(Granularity.h1, a), b
    )
    hours = Decimal(len(hourly))  # hours with readings
    days = hours / 24
    average_w = Decimal(s.consumed_wh) / hours if hours else Decimal(0)

    by_hour: dict[int, list[int]] = defaultdict(list)
    by_day: dict[datetime, int] = defaultdict(int)
    self_supplied = 0  # Wh of consumption met by own production in the same hour
    hours_without_import = 0
    for ts, consumed, produced in hourly:
        by_hour[ts.hour].append(consumed)
        by_day[bucket_start(Granularity.d1, ts)] += consumed
        self_supplied += min(consumed, produced)
        hours_without_import += produced >= consumed
    profile = {h: Decimal(sum(v)) / len(v) for h, v in by_hour.items()}
    ranked = sorted(profile, key=lambda h: (-profile[h], h))
    peak_hours = sorted(ranked[:3]) if profile else []
    off_peak_hours = sorted(ranked[-3:]) if profile else []
    weekend = [v for d, v in by_day.items() if d.weekday() >= 5]
    weekday = [v for d, v in by_day.items() if d.weekday() < 5]
    ratio = None
    if weekend and weekday and sum(weekday):
        ratio = _round(
            (Decimal(sum(weekend)) / len(weekend)) / (Decimal(sum(weekday)) / len(weekday))
        )

    consumed, produced = s.consumed_wh, s.produced_wh
    factor = rt.settings.grid_emission_factor_kg_per_kwh
    if consumed:
        renewable = Decimal(min(self_supplied, consumed)) * 100 / consumed
    else:  # nothing to cover: a production-only meter is all renewable, an idle one nothing
        renewable = Decimal(100 if produced else 0)
    independence = Decimal(hours_without_import) * 100 / hours if hours else Decimal(0)
    return AnalyticsOut(
        meter_id=meter.id,
        period=Period(start=a, end=b),
        consumption_analytics=ConsumptionAnalytics(
            total_consumed_kwh=wh_to_kwh(consumed),
            total_produced_kwh=wh_to_kwh(produced),
            net_consumption_kwh=wh_to_kwh(consumed - produced),
            average_daily_consumption=_round(Decimal(consumed) / 1000 / days) if days else 0.0,
            peak_consumption_kw=wh_to_kwh(s.peak_w or 0),
            efficiency_rating=_efficiency(average_w, s.peak_w or 0),
        ),
        usage_patterns=UsagePatterns(
            peak_hours=peak_hours,
            off_peak_hours=off_peak_hours,
            weekend_vs_weekday_ratio=ratio,
        ),
        environmental_impact=EnvironmentalImpact(
            carbon_offset_kg=_round(Decimal(produced) / 1000 * factor),
            renewable_energy_percent=_round(renewable, "0.1"),
            grid_independence_score=_round(independence, "0.1"),
        ),
    )


def _period_start(period: str, now: datetime) -> tuple[datetime, datetime]:
    """(start of the current period, start of the previous one); weeks start on Monday."""
    day = bucket_start(Granularity.d1, now)
    if period == "day":
        return day, day - timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start - timedelta(days=7)
    start = bucket_start(Granularity.mo1, now)
    previous = bucket_start(Granularity.mo1, start - timedelta(days=1))
    return start, previous


async def compare(session: AsyncSession, rt: Runtime, meter: Meter, period: str) -> CompareOut:
    """This period so far against the same elapsed span of the previous period."""
    now = rt.clock.now()
    current_start, previous_start = _period_start(period, now)
    current_end = repo.ceil_quarter(now)
    elapsed = current_end - current_start
    previous_end = min(previous_start + elapsed, current_start)

    async def totals(a: datetime, b: datetime) -> PeriodTotals:
        s = await repo.meter_sums(session, meter.id, a, b)
        return PeriodTotals(
            start=a,
            end=b,
            consumed_kwh=wh_to_kwh(s.consumed_wh),
            produced_kwh=wh_to_kwh(s.produced_wh),
            net_kwh=wh_to_kwh(s.consumed_wh - s.produced_wh),
            readings=s.readings,
        )

    current = await totals(current_start, current_end)
    previous = await totals(previous_start, previous_end)

    def change(new: float, old: float) -> float | None:
        if old == 0:
            return None
        return _round((Decimal(str(new)) - Decimal(str(old))) * 100 / Decimal(str(old)), "0.1")

    return CompareOut(
        meter_id=meter.id,
        period=period,
        current=current,
        previous=previous,
        change_percent={
            "consumed": change(current.consumed_kwh, previous.consumed_kwh),
            "produced": change(current.produced_kwh, previous.produced_kwh),
            "net": change(current.net_kwh, previous.net_kwh),
        },
    )


# --- regions ---------------------------------------------------------------------------------


async def region_stats(
    session: AsyncSession, rt: Runtime, region: str, start: datetime | None, end: datetime | None
) -> RegionStatsOut:
    a, b = time_range(rt, start, end, timedelta(days=1))
    meters, active, online = await repo.region_counts(session, region)
    s = await repo.region_sums(session, region, a, b)
    peak_at, peak_wh = await repo.region_peak(session, region, a, b)
    return RegionStatsOut(
        region=region,
        period=Period(start=a, end=b),
        meters=meters,
        meters_active=active,
        meters_online=online,
        total_consumed_kwh=wh_to_kwh(s.consumed_wh),
        total_produced_kwh=wh_to_kwh(s.produced_wh),
        net_consumption_kwh=wh_to_kwh(s.consumed_wh - s.produced_wh),
        peak_load_kw=wh_to_kwh(peak_wh * 4),  # a quarter's Wh x 4 = average W over it
        peak_at=peak_at,
    )


async def top_consumers(
    session: AsyncSession,
    rt: Runtime,
    region: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> TopConsumersOut:
    a, b = time_range(rt, start, end, timedelta(days=30))
    rows = await repo.top_consumers(session, region, a, b, limit)
    return TopConsumersOut(
        region=region,
        period=Period(start=a, end=b),
        items=[
            TopConsumerOut(
                meter_id=m,
                serial=serial,
                owner_id=owner,
                consumed_kwh=wh_to_kwh(c),
                produced_kwh=wh_to_kwh(p),
            )
            for m, serial, owner, c, p in rows
        ],
    )


async def realtime(session: AsyncSession, rt: Runtime, region: str) -> RealtimeOut:
    """The load of the newest quarter with data in the last hour (kW = quarter Wh x 4 / 1000)."""
    now = rt.clock.now()
    _, _, online = await repo.region_counts(session, region)
    row = await repo.region_latest_quarter(
        session, region, repo.floor_quarter(now) - timedelta(hours=1)
    )
    if row is None:
        return RealtimeOut(
            region=region,
            interval_start=None,
            interval_end=None,
            consumption_kw=0.0,
            production_kw=0.0,
            net_load_kw=0.0,
            meters_reporting=0,
            meters_online=online,
            as_of=now,
        )
    start, consumed, produced, reporting = row
    return RealtimeOut(
        region=region,
        interval_start=start,
        interval_end=start + QUARTER,
        consumption_kw=wh_to_kwh(consumed * 4),
        production_kw=wh_to_kwh(produced * 4),
        net_load_kw=wh_to_kwh((consumed - produced) * 4),
        meters_reporting=reporting,
        meters_online=online,
        as_of=now,
    )
