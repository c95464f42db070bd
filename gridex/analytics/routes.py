from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from gridex.analytics import service
from gridex.analytics.schemas import (
    ConsumptionReport,
    DashboardOut,
    EnergyOut,
    FinancialOut,
    Group,
    InvestmentsOut,
    MarketOut,
    RevenueReport,
    TradingOut,
    UsersOut,
)
from gridex.auth.deps import AdminPrincipal, CurrentPrincipal, StaffPrincipal
from gridex.core.csvexport import Cell, iter_csv
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Forbidden, ValidationFailed
from gridex.core.responses import csv_download
from gridex.core.schemas import AwareDatetime, raises
from gridex.core.units import UnitError, money_to_micros
from gridex.regions.service import UnknownRegion

analytics_router = APIRouter(prefix="/analytics", tags=["analytics"])
dashboard_router = APIRouter(prefix="/dashboard", tags=["analytics"])
reports_router = APIRouter(prefix="/reports", tags=["analytics"])

From = Annotated[AwareDatetime | None, Query(alias="from")]
Region = Annotated[str | None, Query(max_length=64)]
Format = Annotated[Literal["json", "csv"], Query(alias="format")]


# What a figure of a region can be refused for: a member naming a region, a bad period, an
# unknown region.
_REPORT_ERRORS = raises(Forbidden, ValidationFailed, UnknownRegion)
# A report: JSON, or CSV with ``format=csv``.
_CSV_REPORT = {200: {"content": {"text/csv": {}}}, **_REPORT_ERRORS}


@analytics_router.get("/energy", responses=_REPORT_ERRORS)
async def energy_analytics(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
    group: Group = "day",
    region: Region = None,
) -> EnergyOut:
    """Produced, consumed, self-consumed, exported and imported energy of the caller's meters
    (operators and admins: a ``region``'s), with local trading and emissions."""
    return await service.energy(session, rt, principal, from_, to, group, region)


@analytics_router.get("/trading", responses=_REPORT_ERRORS)
async def trading_analytics(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
    region: Region = None,
) -> TradingOut:
    """Settled local trades against grid-only prices."""
    return await service.trading(session, rt, principal, from_, to, region)


@analytics_router.get("/market", responses=_REPORT_ERRORS)
async def market_analytics(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
    region: Region = None,
    group: Literal["epoch", "hour", "day"] = "day",
) -> MarketOut:
    """Depth and liquidity of a region's market and its price history (default: own region)."""
    return await service.market(session, rt, principal, from_, to, region, group)


@analytics_router.get("/investments", responses=raises(ValidationFailed))
async def investment_analytics(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
    capital: Annotated[str | None, Query(max_length=32)] = None,
) -> InvestmentsOut:
    """Installations the caller holds shares of, revenue by month, return on ``capital``."""
    capital_micros = None
    if capital is not None:
        try:
            capital_micros = money_to_micros(capital)
        except UnitError as exc:
            raise ValidationFailed(str(exc), details={"field": "capital"}) from None
        if capital_micros <= 0:
            raise ValidationFailed("capital must be positive", details={"field": "capital"})
    return await service.investments(session, rt, principal, from_, to, capital_micros)


@analytics_router.get("/users", responses=raises(Forbidden, ValidationFailed))
async def user_analytics(
    _: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
) -> UsersOut:
    """Accounts by role and status, and how many were active or new in the period."""
    return await service.users(session, rt, from_, to)


@analytics_router.get("/financial", responses=raises(Forbidden, ValidationFailed))
async def financial_analytics(
    _: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
) -> FinancialOut:
    """Fees earned, volume settled, deposits, refunds, withdrawals (and outstanding invoices)."""
    return await service.financial(session, rt, from_, to)


@dashboard_router.get("/stats", responses=_REPORT_ERRORS)
async def dashboard_stats(
    principal: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
    region: Region = None,
) -> DashboardOut:
    """The operator's region overview (default: the operator's region, the last 30 days)."""
    return await service.dashboard(session, rt, principal, from_, to, region)


def _csv(name: str, header: Sequence[str], rows: list[Sequence[Cell]]) -> StreamingResponse:
    return csv_download(name, iter_csv(header, rows))


@reports_router.get(
    "/consumption",
    response_model=ConsumptionReport,
    responses=_CSV_REPORT,
)
async def consumption_report(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
    group: Group = "day",
    region: Region = None,
    format_: Format = "json",
) -> ConsumptionReport | StreamingResponse:
    """Energy by day or month (``format=csv``: one row per period, kWh)."""
    report = await service.consumption_report(session, rt, principal, from_, to, group, region)
    if format_ == "json":
        return report
    return _csv(
        "consumption", _CONSUMPTION, [[getattr(r, f) for f in _CONSUMPTION] for r in report.rows]
    )


_CONSUMPTION = [
    "start",
    "consumed_kwh",
    "produced_kwh",
    "self_consumed_kwh",
    "imported_kwh",
    "exported_kwh",
]
_REVENUE = [
    "month",
    "sold_kwh",
    "bought_kwh",
    "sales",
    "fees",
    "revenue_shares",
    "grid_credits",
    "grid_charges",
    "net",
]


@reports_router.get(
    "/revenue",
    response_model=RevenueReport,
    responses=_CSV_REPORT,
)
async def revenue_report(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: From = None,
    to: AwareDatetime | None = None,
    region: Region = None,
    format_: Format = "json",
) -> RevenueReport | StreamingResponse:
    """Money from settlement by month (``format=csv``: amounts as decimal strings)."""
    report = await service.revenue_report(session, rt, principal, from_, to, region)
    if format_ == "json":
        return report
    return _csv("revenue", _REVENUE, [[getattr(r, f) for f in _REVENUE] for r in report.rows])
