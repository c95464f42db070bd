"""Thin HTTP layer of the tariffs: prices in force, history, estimates and forecast for
members; the regions overview and analytics for operators; schedules and overrides for admins."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from gridex.auth.deps import AdminPrincipal, CurrentPrincipal, StaffPrincipal
from gridex.core.config import REGION_NAME
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageDep
from gridex.core.schemas import AwareDatetime, raises
from gridex.core.units import UnitError, kwh_to_wh
from gridex.regions.service import UnknownRegion
from gridex.tariffs import reports, service
from gridex.tariffs.schemas import (
    CurrentOut,
    ForecastOut,
    HistoryItemOut,
    OverrideIn,
    OverrideOut,
    RegionTariffOut,
    ScheduleOut,
    TariffAnalyticsOut,
    TariffEstimateOut,
    TariffIn,
)

tariffs_router = APIRouter(prefix="/tariffs", tags=["tariffs"])

RegionQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, description="Default: your region"),
]
RegionPath = Annotated[str, Path(pattern=f"^{REGION_NAME}$")]
At = Annotated[AwareDatetime | None, Query(description="Default: now")]
From = Annotated[AwareDatetime | None, Query(alias="from")]


@tariffs_router.get("/current", responses=raises(UnknownRegion))
async def tariff_current(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: RegionQuery = None,
    at: At = None,
) -> CurrentOut:
    """The import and export prices in force in a region (default yours) now or at `at`."""
    return await reports.current(
        session, rt, await reports.region_of(session, principal, region), at
    )


@tariffs_router.get("/current/{region}", responses=raises(UnknownRegion))
async def tariff_current_in_region(
    region: RegionPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    at: At = None,
) -> CurrentOut:
    """The import and export prices in force in the named region now or at `at`."""
    return await reports.current(session, rt, await reports.named_region(session, region), at)


@tariffs_router.get("/history", responses=raises(UnknownRegion))
async def tariff_history(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    page: PageDep,
    region: RegionQuery = None,
) -> Page[HistoryItemOut]:
    """The region's schedules and overrides, latest start first."""
    return await reports.history(
        session, rt, await reports.region_of(session, principal, region), page
    )


@tariffs_router.get("/estimate", responses=raises(UnknownRegion))
async def tariff_estimate(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    kwh: Annotated[str | None, Query(description="kWh of grid import, <= 3 decimals")] = None,
    at: At = None,
    region: RegionQuery = None,
    from_: From = None,
    to: AwareDatetime | None = None,
) -> TariffEstimateOut:
    """`kwh` (and `at`): what that grid import costs at the tariff then. `from`, `to`: your own
    meters' import and export over the period at the tariff, line by line per band."""
    if kwh is not None:
        if from_ is not None or to is not None:
            raise ValidationFailed("give kwh (and at) or from and to, not both")
        try:
            wh = kwh_to_wh(kwh)
        except UnitError as exc:
            raise ValidationFailed(str(exc), details={"field": "kwh"}) from exc
        if wh < 0:
            raise ValidationFailed("kwh must not be negative", details={"field": "kwh"})
        found = await reports.region_of(session, principal, region)
        return await reports.estimate_kwh(session, rt, found, wh, at)
    if from_ is None or to is None:
        raise ValidationFailed("give kwh (and at), or from and to", details={"field": "kwh"})
    return await reports.estimate_usage(session, rt, principal, from_, to)


@tariffs_router.get("/forecast", responses=raises(UnknownRegion))
async def tariff_forecast(
    principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep, region: RegionQuery = None
) -> ForecastOut:
    """The next 24 hours per epoch: tariff prices and the recent clearing price of the same
    local time of day."""
    return await reports.forecast(session, rt, await reports.region_of(session, principal, region))


@tariffs_router.get("/regions", responses=raises(Forbidden))
async def tariff_regions(
    principal: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> list[RegionTariffOut]:
    """Operators: every region's prices now and what changes next."""
    return await reports.regions_overview(session, rt)


@tariffs_router.get("/analytics", responses=raises(Forbidden, UnknownRegion))
async def tariff_analytics(
    principal: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: RegionQuery = None,
    from_: From = None,
    to: AwareDatetime | None = None,
) -> TariffAnalyticsOut:
    """Operators: hours and prices per band over a period (default the last 30 days), and the
    local market's clearing prices against the tariff."""
    end = to or rt.clock.now()
    start = from_ or end - timedelta(days=30)
    found = await reports.region_of(session, principal, region)
    return await reports.analytics(session, rt, found, start, end)


@tariffs_router.post(
    "", status_code=status.HTTP_201_CREATED, responses=raises(Forbidden, Conflict, UnknownRegion)
)
async def create_tariff(
    body: TariffIn, principal: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> ScheduleOut:
    """Admins: a new schedule for a region from `effective_from` (it supersedes the one in
    force from then on; history is kept)."""
    row = await service.create_schedule(
        session,
        rt,
        principal,
        region=body.region,
        import_price_micros=body.import_price,
        feed_in_price_micros=body.export_price,
        bands=[band.band(body.import_price) for band in body.time_of_use],
        holidays=body.holidays,
        effective_from=body.effective_from,
    )
    region = await reports.named_region(session, body.region)
    return reports.schedule_out(row, region.timezone)


@tariffs_router.post(
    "/overrides",
    status_code=status.HTTP_201_CREATED,
    responses=raises(Forbidden, UnknownRegion),
)
async def create_tariff_override(
    body: OverrideIn, principal: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> OverrideOut:
    """Admins: prices for a window (from `starts_at`, default now, to `expires_at`) that win
    over the schedule while active."""
    row = await service.create_override(
        session,
        rt,
        principal,
        region=body.region,
        import_price_micros=body.import_price,
        feed_in_price_micros=body.export_price,
        reason=body.reason,
        starts_at=body.starts_at,
        expires_at=body.expires_at,
    )
    return reports.override_out(row, rt.clock.now())


@tariffs_router.delete("/overrides/{override_id}", responses=raises(Forbidden, NotFound, Conflict))
async def cancel_tariff_override(
    override_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> OverrideOut:
    """Admins: end an override now."""
    row = await service.cancel_override(session, rt, principal, override_id)
    return reports.override_out(row, rt.clock.now())
