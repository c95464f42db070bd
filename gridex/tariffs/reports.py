"""The tariffs' read side: the prices in force, history, estimates, the 24-hour forecast, the
operators' overview and analytics. Every price here comes from :func:`service.price_at` or
:func:`service.price_segments`.

Clearing prices belong to the market, a later domain: it hands them down through
``rt.extensions[CLEARING_PRICES]`` (wired in the app); without it forecasts have no expected
clearing price and analytics no market figures.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from typing import cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.service import Principal
from gridex.core.errors import NotFound, ValidationFailed
from gridex.core.pagination import Page, PageParams
from gridex.core.runtime import Runtime
from gridex.core.units import round_half_even
from gridex.meters.models import Meter
from gridex.meters.repository import quarter_sums
from gridex.regions import service as regions
from gridex.regions.models import Region
from gridex.tariffs import repository, service
from gridex.tariffs.models import TariffOverride, TariffSchedule
from gridex.tariffs.rules import PriceSegment
from gridex.tariffs.schemas import (
    BandHoursOut,
    CurrentBandOut,
    CurrentOut,
    ForecastOut,
    ForecastPointOut,
    HistoryItemOut,
    MarketVsTariffOut,
    OverrideOut,
    RegionTariffOut,
    ScheduleOut,
    TariffAnalyticsOut,
    TariffEstimateLineOut,
    TariffEstimateOut,
    band_out,
)

# Cleared epochs of a region starting in ``[since, until)``: ``(start, price_micros, volume_wh)``.
CLEARING_PRICES = "tariffs.clearing_prices"
ClearingPrices = Callable[
    [AsyncSession, str, datetime, datetime], Awaitable[list[tuple[datetime, int, int]]]
]

# The forecast's expected clearing price: the same local time of day over this many days.
PROFILE_DAYS = 7
MAX_PERIOD = timedelta(days=366)


async def _clearing_prices(
    session: AsyncSession, rt: Runtime, region: str, since: datetime, until: datetime
) -> list[tuple[datetime, int, int]]:
    hook = cast(ClearingPrices | None, rt.extensions.get(CLEARING_PRICES))
    return [] if hook is None else await hook(session, region, since, until)


def _check_period(start: datetime, end: datetime) -> None:
    if end <= start:
        raise ValidationFailed("to must be after from", details={"field": "to"})
    if end - start > MAX_PERIOD:
        raise ValidationFailed("a period is at most 366 days", details={"field": "to"})


def segment_at(segments: Sequence[PriceSegment], at: datetime) -> PriceSegment:
    """The segment of ``segments`` (contiguous, ordered) containing ``at``."""
    index = bisect.bisect_right([s.start for s in segments], at) - 1
    return segments[max(index, 0)]


# --- outputs --------------------------------------------------------------------------------------


def schedule_out(
    row: TariffSchedule, timezone: str, superseded_at: datetime | None = None
) -> ScheduleOut:
    return ScheduleOut(
        id=row.id,
        region=row.region,
        timezone=timezone,
        effective_from=row.effective_from,
        superseded_at=superseded_at,
        import_price=row.import_price_micros,
        export_price=row.feed_in_price_micros,
        time_of_use=[band_out(b) for b in row.bands],
        holidays=[date.fromisoformat(d) for d in row.holidays],
        created_at=row.created_at,
        created_by=row.created_by_id,
    )


def override_out(row: TariffOverride, now: datetime) -> OverrideOut:
    return OverrideOut(
        id=row.id,
        region=row.region,
        import_price=row.import_price_micros,
        export_price=row.feed_in_price_micros,
        reason=row.reason,
        starts_at=row.starts_at,
        expires_at=row.expires_at,
        ends_at=row.ends_at,
        cancelled_at=row.cancelled_at,
        active=row.starts_at <= now < row.ends_at,
        created_at=row.created_at,
        created_by=row.created_by_id,
    )


# --- current and history --------------------------------------------------------------------------


async def current(
    session: AsyncSession, rt: Runtime, region: Region, at: datetime | None
) -> CurrentOut:
    at = at or rt.clock.now()
    price = await service.price_at(session, rt, region.name, at)
    band = None
    if price.band_start is not None and price.band_end is not None:
        band = CurrentBandOut(name=price.band, start=price.band_start, end=price.band_end)
    return CurrentOut(
        region=region.name,
        timezone=region.timezone,
        at=at,
        import_price=price.import_price_micros,
        export_price=price.feed_in_price_micros,
        band=band,
        band_name=price.band,
        source=price.source,
        schedule_id=price.schedule_id,
        override_id=price.override_id,
    )


async def history(
    session: AsyncSession, rt: Runtime, region: Region, page: PageParams
) -> Page[HistoryItemOut]:
    """Every schedule and override of the region, the latest start first."""
    now = rt.clock.now()
    schedules = list(await session.scalars(repository.schedules_query(region.name)))
    overrides = list(await session.scalars(repository.overrides_query(region.name)))
    items: list[HistoryItemOut] = []
    superseded_at: datetime | None = None
    for row in schedules:  # newest first: each is superseded by the one before it in the list
        items.append(
            HistoryItemOut(
                kind="schedule",
                schedule=schedule_out(row, region.timezone, superseded_at),
                starts_at=row.effective_from,
            )
        )
        superseded_at = row.effective_from
    items += [
        HistoryItemOut(kind="override", override=override_out(o, now), starts_at=o.starts_at)
        for o in overrides
    ]
    items.sort(key=lambda i: i.starts_at, reverse=True)
    return Page.build(items[page.offset : page.offset + page.per_page], len(items), page)


async def regions_overview(session: AsyncSession, rt: Runtime) -> list[RegionTariffOut]:
    """Every region's prices now, where they come from and what changes next."""
    now = rt.clock.now()
    pending = await repository.pending_override_counts(session, now)
    out = []
    for region in await regions.list_regions(session):
        price = await service.price_at(session, rt, region.name, now)
        in_force = await repository.schedule_at(session, region.name, now)
        upcoming = await repository.next_schedule(session, region.name, now)
        out.append(
            RegionTariffOut(
                region=region.name,
                timezone=region.timezone,
                import_price=price.import_price_micros,
                export_price=price.feed_in_price_micros,
                band=price.band,
                source=price.source,
                schedule_id=price.schedule_id,
                schedule_effective_from=in_force.effective_from if in_force else None,
                next_schedule_at=upcoming.effective_from if upcoming else None,
                override_id=price.override_id,
                pending_overrides=pending.get(region.name, 0),
            )
        )
    return out


# --- estimates ------------------------------------------------------------------------------------


def _lines(
    kind: str, amounts: dict[tuple[str, int], int], sign: int
) -> list[TariffEstimateLineOut]:
    """One line per (band, unit price): Wh x price / 1000, rounded half-even once per line."""
    return [
        TariffEstimateLineOut(
            kind=kind,
            band=band,
            kwh=wh,
            unit_price=price,
            amount=sign * round_half_even(wh * price, 1000),
        )
        for (band, price), wh in sorted(amounts.items(), key=lambda kv: (-kv[0][1], kv[0][0]))
        if wh
    ]


async def estimate_kwh(
    session: AsyncSession, rt: Runtime, region: Region, wh: int, at: datetime | None
) -> TariffEstimateOut:
    """What ``wh`` of grid import would cost at ``at`` (default now)."""
    at = at or rt.clock.now()
    price = await service.price_at(session, rt, region.name, at)
    lines = _lines("import", {(price.band, price.import_price_micros): wh}, 1)
    return TariffEstimateOut(
        region=region.name,
        from_=at,
        to=None,
        lines=lines,
        total=sum(line.amount for line in lines),
    )


async def estimate_usage(
    session: AsyncSession, rt: Runtime, principal: Principal, start: datetime, end: datetime
) -> TariffEstimateOut:
    """The caller's metered grid import over ``[start, end)`` at the tariff, one line per band
    and price, and its export credited at the feed-in price. Each quarter-hour is priced at its
    start, with the tariff of its meter's region."""
    _check_period(start, end)
    owned = (Meter.owner_id == principal.user.id) & Meter.deleted_at.is_(None)
    regions_used = list(await session.scalars(select(Meter.region).where(owned).distinct()))
    imports: dict[tuple[str, int], int] = defaultdict(int)
    exports: dict[tuple[str, int], int] = defaultdict(int)
    for region in sorted(regions_used):
        segments = await service.price_segments(session, rt, region, start, end)
        meters = select(Meter.id).where(owned, Meter.region == region)
        for _, bucket, sums in await quarter_sums(session, meters, start, end):
            segment = segment_at(segments, bucket)
            imports[(segment.band, segment.import_price_micros)] += sums.consumed_wh
            exports[("feed_in", segment.feed_in_price_micros)] += sums.produced_wh
    lines = _lines("import", imports, 1) + _lines("export", exports, -1)
    return TariffEstimateOut(
        region=regions_used[0] if len(regions_used) == 1 else None,
        from_=start,
        to=end,
        lines=lines,
        total=sum(line.amount for line in lines),
    )


# --- forecast -------------------------------------------------------------------------------------


def _vwap(points: Sequence[tuple[int, int]]) -> int | None:
    """Volume-weighted average of ``(price, volume)``; None without volume."""
    volume = sum(v for _, v in points)
    if not volume:
        return None
    return round_half_even(sum(p * v for p, v in points), volume)


async def forecast(session: AsyncSession, rt: Runtime, region: Region) -> ForecastOut:
    """The next 24 hours per epoch, from the epoch in delivery now: the tariff's prices and the
    clearing prices of the same local time of day over the last :data:`PROFILE_DAYS` days."""
    now = rt.clock.now()
    length = timedelta(minutes=rt.settings.epoch_minutes)
    first = now - (now - datetime(1970, 1, 1, tzinfo=now.tzinfo)) % length
    end = first + timedelta(hours=24)
    segments = await service.price_segments(session, rt, region.name, first, end)
    tz = service.region_tz(region.timezone)
    profile: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for start, price, volume in await _clearing_prices(
        session, rt, region.name, first - timedelta(days=PROFILE_DAYS), now
    ):
        local = start.astimezone(tz)
        profile[(local.hour, local.minute)].append((price, volume))
    points = []
    epoch = first
    while epoch < end:
        segment = segment_at(segments, epoch)
        local = epoch.astimezone(tz)
        points.append(
            ForecastPointOut(
                epoch=epoch,
                band=segment.band,
                import_price=segment.import_price_micros,
                export_price=segment.feed_in_price_micros,
                source=segment.source,
                expected_clearing_price=_vwap(profile.get((local.hour, local.minute), [])),
            )
        )
        epoch += length
    return ForecastOut(
        region=region.name, timezone=region.timezone, profile_days=PROFILE_DAYS, points=points
    )


# --- analytics ------------------------------------------------------------------------------------


def _time_weighted(segments: Sequence[PriceSegment], price: Callable[[PriceSegment], int]) -> int:
    seconds = sum(int(s.seconds) for s in segments)
    if not seconds:
        return 0
    return round_half_even(sum(price(s) * int(s.seconds) for s in segments), seconds)


async def analytics(
    session: AsyncSession, rt: Runtime, region: Region, start: datetime, end: datetime
) -> TariffAnalyticsOut:
    """The region's tariff over ``[start, end)``: hours and average price per band, overrides,
    and the local market against it (cleared epochs priced at the tariff of their time)."""
    _check_period(start, end)
    segments = await service.price_segments(session, rt, region.name, start, end)
    per_band: dict[str, list[PriceSegment]] = defaultdict(list)
    for segment in segments:
        per_band[segment.band].append(segment)
    bands = [
        BandHoursOut(
            band=band,
            hours=round(sum(s.seconds for s in items) / 3600, 4),
            average_import_price=_time_weighted(items, lambda s: s.import_price_micros),
        )
        for band, items in sorted(per_band.items())
    ]
    cleared = await _clearing_prices(session, rt, region.name, start, end)
    volume = sum(v for _, _, v in cleared)
    imports: list[tuple[int, int]] = []
    feed_ins: list[tuple[int, int]] = []
    saved = earned = 0
    for epoch, price, wh in cleared:
        segment = segment_at(segments, epoch)
        imports.append((segment.import_price_micros, wh))
        feed_ins.append((segment.feed_in_price_micros, wh))
        saved += round_half_even(wh * (segment.import_price_micros - price), 1000)
        earned += round_half_even(wh * (price - segment.feed_in_price_micros), 1000)
    return TariffAnalyticsOut(
        region=region.name,
        timezone=region.timezone,
        from_=start,
        to=end,
        time_weighted_import_price=_time_weighted(segments, lambda s: s.import_price_micros),
        time_weighted_export_price=_time_weighted(segments, lambda s: s.feed_in_price_micros),
        override_hours=round(sum(s.seconds for s in segments if s.source == "override") / 3600, 4),
        schedules=len({s.schedule_id for s in segments if s.schedule_id is not None}),
        bands=bands,
        market=MarketVsTariffOut(
            epochs_cleared=len(cleared),
            volume_kwh=volume,
            average_clearing_price=_vwap([(p, v) for _, p, v in cleared]),
            average_import_price=_vwap(imports),
            average_feed_in_price=_vwap(feed_ins),
            saved_vs_grid=saved,
            earned_vs_feed_in=earned,
        ),
    )


async def named_region(session: AsyncSession, name: str) -> Region:
    """An existing region for a path parameter; 404 else."""
    found = await regions.get_region(session, name)
    if found is None:
        raise NotFound("No such region")
    return found


async def region_of(session: AsyncSession, principal: Principal, name: str | None) -> Region:
    """The region named in a query (422 ``UNKNOWN_REGION`` if none such), else the caller's."""
    name = name or principal.user.region
    if not name:
        raise ValidationFailed(
            "region is required (you have no region of your own)", details={"field": "region"}
        )
    return await regions.require_region(session, name)
