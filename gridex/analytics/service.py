"""What each role asks, answered from rollups and settled data (docs/analytics.md defines every
figure). Answers are cached for ``GRIDEX_ANALYTICS_CACHE_SECONDS`` (see ``cache``).

Energy figures come from the hourly rollups of the meters concerned, summed per hour first:
in each hour, ``min(consumed, produced)`` is energy produced and used behind the same meters
(self-consumed; for a region, met locally), the rest of the production is exported and the rest
of the consumption imported. Trading and money come from settled trades and settlement
positions, priced at what settlement fixed for each epoch.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.analytics import repository as repo
from gridex.analytics.cache import cached
from gridex.analytics.schemas import (
    ConsumptionReport,
    ConsumptionRow,
    DashboardOut,
    EnergyGroup,
    EnergyOut,
    Environment,
    FinancialOut,
    Group,
    Holding,
    InvestmentsOut,
    Invoices,
    MarketOut,
    MarketSummary,
    MeterTotal,
    MonthAmount,
    PricePoint,
    RevenueReport,
    RevenueRow,
    TradingOut,
    UsersOut,
)
from gridex.auth.models import STAFF_ROLES, Role, User
from gridex.auth.service import Principal
from gridex.core.errors import Forbidden, ValidationFailed
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, round_half_even, wh_to_kwh
from gridex.ledger.models import AccountKind, EntryType, account_id
from gridex.market.models import Side
from gridex.market.prices import grid_prices
from gridex.meters import repository as meters_repo
from gridex.meters.models import Granularity
from gridex.meters.rollups import Sums, bucket_start
from gridex.regions.service import require_region
from gridex.runtimeconfig.service import store_of

HOUR = timedelta(hours=1)
MAX_RANGE = timedelta(days=3660)
DEFAULT_SPAN = timedelta(days=30)
TOP = 10

# A billing domain puts here a function ``(session, start, end) -> (count, micros)`` of the
# invoices outstanding (issued or overdue) at the end of the period; without one the figure is
# null ("not available"), never zero.
OUTSTANDING_INVOICES = "analytics.outstanding_invoices"
OutstandingInvoices = Callable[[AsyncSession], Awaitable[tuple[int, int]]]

Model = TypeVar("Model", bound=BaseModel)


# --- helpers --------------------------------------------------------------------------------


def period(
    rt: Runtime, start: datetime | None, end: datetime | None, span: timedelta = DEFAULT_SPAN
) -> tuple[datetime, datetime]:
    """``[from, to)`` widened to whole UTC hours; defaults: to = now, from = to - span."""
    end = end or rt.clock.now()
    start = start or end - span
    if start >= end:
        raise ValidationFailed("from must be before to", details={"field": "from"})
    if end - start > MAX_RANGE:
        raise ValidationFailed("The range is longer than 10 years", details={"field": "from"})
    first = bucket_start(Granularity.h1, start)
    last = bucket_start(Granularity.h1, end)
    return first, last if last == end else last + HOUR


def _round(value: Decimal, places: str = "0.001") -> float:
    return float(value.quantize(Decimal(places), rounding=ROUND_HALF_EVEN))


def _percent(part: int, whole: int) -> float | None:
    return _round(Decimal(part) * 100 / whole, "0.1") if whole else None


def _price(value_micros: int, wh: int) -> str | None:
    """Average price per kWh of ``value_micros`` paid for ``wh``."""
    return micros_to_money(round_half_even(value_micros * 1000, wh)) if wh else None


def _kg(wh: int, factor: Decimal) -> float:
    return _round(Decimal(wh) / 1000 * factor)


def emission_factor(rt: Runtime, region: str | None) -> Decimal:
    """kg CO2e per kWh of grid electricity in ``region`` (runtime configurable)."""
    settings = rt.settings
    if region is not None and region in settings.region_emission_factors:
        return settings.region_emission_factors[region]
    return settings.grid_emission_factor_kg_per_kwh


async def _answer(
    rt: Runtime,
    model: type[Model],
    name: str,
    params: dict[str, Any],
    compute: Callable[[], Awaitable[Model]],
) -> Model:
    async def as_json() -> dict[str, Any]:
        return (await compute()).model_dump(mode="json", by_alias=True)

    return model.model_validate(await cached(rt, name, store_of(rt).version, params, as_json))


async def scope(
    session: AsyncSession, principal: Principal, region: str | None
) -> tuple[uuid.UUID | None, str | None]:
    """Whose figures: the caller's own (no ``region``), or a region's for staff (403 else)."""
    if region is None:
        return principal.user.id, None
    if principal.role not in STAFF_ROLES:
        raise Forbidden("Only operators and admins see a region's figures")
    await require_region(session, region)
    return None, region


def staff_region(principal: Principal, region: str | None) -> str:
    region = region or principal.user.region
    if region is None:
        raise ValidationFailed("Name a region", details={"field": "region"})
    return region


def _params(**values: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else str(v)) for k, v in values.items()}


# --- energy -----------------------------------------------------------------------------------


class Totals:
    """Energy sums (Wh) over hours; ``self_wh`` is the per-hour overlap of consumption and
    production."""

    __slots__ = ("consumed_wh", "produced_wh", "self_wh")

    def __init__(self) -> None:
        self.consumed_wh = self.produced_wh = self.self_wh = 0

    def add(self, consumed: int, produced: int) -> None:
        self.consumed_wh += consumed
        self.produced_wh += produced
        self.self_wh += min(consumed, produced)

    @property
    def exported_wh(self) -> int:
        return self.produced_wh - self.self_wh

    @property
    def imported_wh(self) -> int:
        return self.consumed_wh - self.self_wh


def group_start(group: Group, hour: datetime) -> datetime:
    return bucket_start(Granularity.d1 if group == "day" else Granularity.mo1, hour)


def energy_groups(
    hours: Iterable[tuple[datetime, int, int]], group: Group
) -> tuple[Totals, dict[datetime, Totals]]:
    total = Totals()
    groups: dict[datetime, Totals] = {}
    for ts, consumed, produced in hours:
        total.add(consumed, produced)
        key = group_start(group, ts)
        bucket = groups.get(key)
        if bucket is None:
            bucket = groups[key] = Totals()
        bucket.add(consumed, produced)
    return total, groups


async def energy(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    group: Group,
    region: str | None,
) -> EnergyOut:
    """The caller's energy (or a region's, for staff) over the period, by day or month."""
    user_id, region = await scope(session, principal, region)
    a, b = period(rt, start, end)
    key = _params(user=user_id, region=region, a=a, b=b, group=group)

    async def compute() -> EnergyOut:
        meters = repo.region_meters(region) if region else repo.owner_meters(principal.user.id)
        hours = await repo.hourly_energy(session, meters, a, b)
        total, groups = energy_groups(hours, group)
        bought, sold = await repo.local_energy(session, a, b, user_id=user_id, region=region)
        place = region or principal.user.region
        factor = emission_factor(rt, place)
        from_grid = max(total.imported_wh - bought, 0)
        if region:
            count = (await meters_repo.region_counts(session, region))[0]
        else:
            owned = meters_repo.select_count(repo.owner_meters(principal.user.id))
            count = int(await session.scalar(owned) or 0)
        return EnergyOut(
            from_=a,
            to=b,
            region=region,
            meters=count,
            produced_kwh=wh_to_kwh(total.produced_wh),
            consumed_kwh=wh_to_kwh(total.consumed_wh),
            exported_kwh=wh_to_kwh(total.exported_wh),
            imported_kwh=wh_to_kwh(total.imported_wh),
            self_consumed_kwh=wh_to_kwh(total.self_wh),
            bought_local_kwh=wh_to_kwh(bought),
            sold_local_kwh=wh_to_kwh(sold),
            self_sufficiency_percent=_percent(
                total.self_wh + min(bought, total.imported_wh), total.consumed_wh
            ),
            environment=Environment(
                region=place,
                emission_factor_kg_per_kwh=str(factor),
                grid_emissions_kg=_kg(from_grid, factor),
                avoided_emissions_kg=_kg(total.consumed_wh - from_grid, factor),
            ),
            groups=[
                EnergyGroup(
                    start=at,
                    produced_kwh=wh_to_kwh(t.produced_wh),
                    consumed_kwh=wh_to_kwh(t.consumed_wh),
                    self_consumed_kwh=wh_to_kwh(t.self_wh),
                    exported_kwh=wh_to_kwh(t.exported_wh),
                    imported_kwh=wh_to_kwh(t.imported_wh),
                )
                for at, t in sorted(groups.items())
            ],
        )

    return await _answer(rt, EnergyOut, "energy", key, compute)


# --- trading ----------------------------------------------------------------------------------


async def trading(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    region: str | None,
) -> TradingOut:
    """Settled trades against grid-only: what the caller saved buying locally instead of at the
    grid import price, and earned selling instead of at the feed-in price."""
    user_id, region = await scope(session, principal, region)
    a, b = period(rt, start, end)
    key = _params(user=user_id, region=region, a=a, b=b)

    async def compute() -> TradingOut:
        place = region or principal.user.region or ""
        prices = await grid_prices(session, rt, place, rt.clock.now())
        common: dict[str, Any] = {
            "start": a,
            "end": b,
            "user_id": user_id,
            "region": region,
            "import_micros": prices.import_price_micros,
            "feed_in_micros": prices.feed_in_price_micros,
        }
        buy = await repo.settled_trades(session, side=Side.buy, **common)
        sell = await repo.settled_trades(session, side=Side.sell, **common)
        grid_cost = round_half_even(buy.grid_value_milli, 1000)
        feed_in_value = round_half_even(sell.grid_value_milli, 1000)
        return TradingOut(
            from_=a,
            to=b,
            region=region,
            sold_kwh=wh_to_kwh(sell.wh),
            bought_kwh=wh_to_kwh(buy.wh),
            sales=micros_to_money(sell.value_micros),
            purchases=micros_to_money(buy.value_micros),
            fees=micros_to_money(sell.fee_micros),
            average_sell_price=_price(sell.value_micros, sell.wh),
            average_buy_price=_price(buy.value_micros, buy.wh),
            grid_import_price=micros_to_money(prices.import_price_micros),
            feed_in_price=micros_to_money(prices.feed_in_price_micros),
            saved_vs_grid=micros_to_money(grid_cost - buy.value_micros),
            earned_vs_feed_in=micros_to_money(sell.value_micros - sell.fee_micros - feed_in_value),
            trades=buy.trades + sell.trades if region is None else sell.trades,
        )

    return await _answer(rt, TradingOut, "trading", key, compute)


# --- market -----------------------------------------------------------------------------------


async def _market(
    session: AsyncSession, region: str, a: datetime, b: datetime, group: str
) -> MarketOut:
    epochs = await repo.region_epochs(session, region, a, b)
    books = await repo.best_prices(session, region, a, b)
    cleared = [e for e in epochs if e.price_micros is not None and (e.volume_wh or 0) > 0]
    volume = sum(e.volume_wh or 0 for e in cleared)
    turnover = sum((e.volume_wh or 0) * (e.price_micros or 0) for e in cleared)
    spreads = [
        ask - bid
        for e in epochs
        for bid, ask, _ in [books.get(e.id, (None, None, 0))]
        if bid is not None and ask is not None
    ]
    history: dict[datetime, list[Any]] = {}
    for e in cleared:
        at = (
            e.start
            if group == "epoch"
            else bucket_start(Granularity.h1 if group == "hour" else Granularity.d1, e.start)
        )
        history.setdefault(at, []).append(e)
    points = []
    for at, items in sorted(history.items()):
        wh = sum(e.volume_wh for e in items)
        value = sum(e.volume_wh * e.price_micros for e in items)
        points.append(
            PricePoint(
                start=at,
                epochs=len(items),
                volume_kwh=wh_to_kwh(wh),
                average_price=micros_to_money(round_half_even(value, wh)) if wh else None,
                high=micros_to_money(max(e.price_micros for e in items)),
                low=micros_to_money(min(e.price_micros for e in items)),
            )
        )
    return MarketOut(
        from_=a,
        to=b,
        region=region,
        epochs=len(epochs),
        cleared_epochs=len(cleared),
        cleared_share_percent=_percent(len(cleared), len(epochs)),
        orders=sum(count for _, _, count in books.values()),
        buy_orders=sum(e.buy_orders or 0 for e in epochs),
        sell_orders=sum(e.sell_orders or 0 for e in epochs),
        volume_kwh=wh_to_kwh(volume),
        turnover=micros_to_money(round_half_even(turnover, 1000)),
        average_price=micros_to_money(round_half_even(turnover, volume)) if volume else None,
        average_spread=(
            micros_to_money(round_half_even(sum(spreads), len(spreads))) if spreads else None
        ),
        epochs_with_both_sides=len(spreads),
        history=points,
    )


async def market(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    region: str | None,
    group: str,
) -> MarketOut:
    """Depth and liquidity of a region's market (the caller's region by default)."""
    region = staff_region(principal, region)
    await require_region(session, region)
    a, b = period(rt, start, end)

    async def compute() -> MarketOut:
        return await _market(session, region, a, b, group)

    return await _answer(
        rt, MarketOut, "market", _params(region=region, a=a, b=b, group=group), compute
    )


# --- the operator's region overview ---------------------------------------------------------


def _meter_totals(
    meters: dict[uuid.UUID, Any], sums: dict[uuid.UUID, Sums], by: str
) -> list[MeterTotal]:
    ranked = sorted(
        (m for m in sums if getattr(sums[m], by) > 0),
        key=lambda m: (-getattr(sums[m], by), meters[m].serial),
    )[:TOP]
    return [
        MeterTotal(
            meter_id=m,
            serial=meters[m].serial,
            owner_id=meters[m].owner_id,
            consumed_kwh=wh_to_kwh(sums[m].consumed_wh),
            produced_kwh=wh_to_kwh(sums[m].produced_wh),
        )
        for m in ranked
    ]


async def dashboard(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    region: str | None,
) -> DashboardOut:
    """A region at a glance: energy balance, share met locally, peak hourly load, market
    liquidity, top consumers and producers, meters online."""
    region = staff_region(principal, region)
    await require_region(session, region)
    a, b = period(rt, start, end)

    async def compute() -> DashboardOut:
        return await region_overview(session, region, a, b)

    return await _answer(rt, DashboardOut, "dashboard", _params(region=region, a=a, b=b), compute)


async def region_overview(
    session: AsyncSession, region: str, a: datetime, b: datetime
) -> DashboardOut:
    hours = await repo.hourly_energy(session, repo.region_meters(region), a, b)
    total = Totals()
    peak_at, peak_wh = None, 0
    for ts, consumed, produced in hours:
        total.add(consumed, produced)
        if consumed > peak_wh:
            peak_at, peak_wh = ts, consumed
    meters, active, online = await meters_repo.region_counts(session, region)
    sums = await meters_repo.meters_sums(session, repo.region_meters(region), a, b)
    known = await repo.meters_by_id(session, list(sums))
    market_view = await _market(session, region, a, b, "day")
    return DashboardOut(
        from_=a,
        to=b,
        region=region,
        meters=meters,
        meters_active=active,
        meters_online=online,
        consumed_kwh=wh_to_kwh(total.consumed_wh),
        produced_kwh=wh_to_kwh(total.produced_wh),
        met_locally_kwh=wh_to_kwh(total.self_wh),
        local_share_percent=_percent(total.self_wh, total.consumed_wh),
        imported_kwh=wh_to_kwh(total.imported_wh),
        exported_kwh=wh_to_kwh(total.exported_wh),
        # An hour's Wh is its average power in W.
        peak_load_kw=wh_to_kwh(peak_wh),
        peak_at=peak_at,
        market=MarketSummary(
            epochs=market_view.epochs,
            cleared_epochs=market_view.cleared_epochs,
            cleared_share_percent=market_view.cleared_share_percent,
            orders=market_view.orders,
            volume_kwh=market_view.volume_kwh,
            average_price=market_view.average_price,
            average_spread=market_view.average_spread,
        ),
        top_consumers=_meter_totals(known, sums, "consumed_wh"),
        top_producers=_meter_totals(known, sums, "produced_wh"),
    )


# --- investors --------------------------------------------------------------------------------


def _month(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


async def investments(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    capital_micros: int | None,
) -> InvestmentsOut:
    """The installations the caller holds shares of, their energy, the revenue shares the caller
    received by month, and the return on the capital the caller states."""
    a, b = period(rt, start, end, timedelta(days=365))
    user = principal.user.id

    async def compute() -> InvestmentsOut:
        held = await repo.holdings(session, user)
        sums = await meters_repo.meters_sums(
            session, repo.meters_in([m.id for _, _, m in held]), a, b
        )
        rows = []
        produced = attributable = 0
        for installation, bp, meter in held:
            wh = sums[meter.id].produced_wh if meter.id in sums else 0
            share_wh = wh * bp // 10_000
            produced += wh
            attributable += share_wh
            rows.append(
                Holding(
                    installation_id=installation.id,
                    meter_id=meter.id,
                    serial=meter.serial,
                    region=meter.region,
                    share_percent=bp / 100,
                    produced_kwh=wh_to_kwh(wh),
                    attributable_kwh=wh_to_kwh(share_wh),
                )
            )
        by_month: dict[str, int] = defaultdict(int)
        for at, amount in await repo.postings_of_type(
            session,
            account_id(AccountKind.available, user),
            (EntryType.revenue_share.value,),
            a,
            b,
        ):
            by_month[_month(at)] += amount
        revenue = sum(by_month.values())
        ret = None
        if capital_micros:
            ret = _round(Decimal(revenue) * 100 / capital_micros, "0.01")
        return InvestmentsOut(
            from_=a,
            to=b,
            installations=rows,
            produced_kwh=wh_to_kwh(produced),
            attributable_kwh=wh_to_kwh(attributable),
            revenue=micros_to_money(revenue),
            revenue_by_month=[
                MonthAmount(month=m, amount=micros_to_money(v)) for m, v in sorted(by_month.items())
            ],
            capital=micros_to_money(capital_micros) if capital_micros is not None else None,
            return_percent=ret,
        )

    key = _params(user=user, a=a, b=b, capital=capital_micros)
    return await _answer(rt, InvestmentsOut, "investments", key, compute)


# --- admin ------------------------------------------------------------------------------------


async def users(
    session: AsyncSession, rt: Runtime, start: datetime | None, end: datetime | None
) -> UsersOut:
    """Accounts by role and status; active = signed in during the period."""
    a, b = period(rt, start, end)
    by_role = await repo.users_by(session, User.role)
    return UsersOut(
        from_=a,
        to=b,
        total=sum(by_role.values()),
        by_role={role.value: by_role.get(role.value, 0) for role in Role},
        by_status=await repo.users_by(session, User.status),
        active=await repo.users_active(session, a, b),
        new=await repo.users_created(session, a, b),
    )


async def financial(
    session: AsyncSession, rt: Runtime, start: datetime | None, end: datetime | None
) -> FinancialOut:
    """Platform money over the period, from the ledger's platform accounts and settled trades."""
    a, b = period(rt, start, end)
    fees = await repo.account_movements(session, AccountKind.fees, a, b)
    deposits = await repo.account_movements(session, AccountKind.deposits, a, b)
    payouts = await repo.account_movements(session, AccountKind.payouts, a, b)
    settled = await repo.settled_trades(
        session, side=Side.sell, start=a, end=b, import_micros=0, feed_in_micros=0
    )
    outstanding = rt.extensions.get(OUTSTANDING_INVOICES)
    invoices = None
    if outstanding is not None:
        count, amount = await outstanding(session)  # type: ignore[operator]
        invoices = Invoices(count=count, amount=micros_to_money(amount))
    return FinancialOut(
        from_=a,
        to=b,
        currency=rt.settings.currency,
        fees_earned=micros_to_money(sum(fees.values())),
        volume_settled_kwh=wh_to_kwh(settled.wh),
        value_settled=micros_to_money(settled.value_micros),
        trades_settled=settled.trades,
        # `deposits` mirrors cash received: a top-up takes it down, a refund back up.
        deposits=micros_to_money(-deposits.get(EntryType.topup.value, 0)),
        refunds=micros_to_money(deposits.get(EntryType.refund.value, 0)),
        withdrawals=micros_to_money(sum(payouts.values())),
        outstanding_invoices=invoices,
    )


# --- reports ----------------------------------------------------------------------------------


async def consumption_report(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    group: Group,
    region: str | None,
) -> ConsumptionReport:
    """The energy answer's groups as report rows (the same figures as ``/analytics/energy``)."""
    answer = await energy(session, rt, principal, start, end, group, region)
    return ConsumptionReport(
        from_=answer.from_,
        to=answer.to,
        region=answer.region,
        group=group,
        rows=[
            ConsumptionRow(
                start=g.start,
                consumed_kwh=g.consumed_kwh,
                produced_kwh=g.produced_kwh,
                self_consumed_kwh=g.self_consumed_kwh,
                imported_kwh=g.imported_kwh,
                exported_kwh=g.exported_kwh,
            )
            for g in answer.groups
        ],
    )


async def revenue_report(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    region: str | None,
) -> RevenueReport:
    """Money from settlement by month (UTC): sales after fees and shares (a seller's own share
    of its sale included), revenue shares received from others' sales, grid credits and
    charges for delivery differences, and their net."""
    user_id, region = await scope(session, principal, region)
    a, b = period(rt, start, end, timedelta(days=365))
    months: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for at, p in await repo.settled_positions(session, a, b, user_id=user_id, region=region):
        row = months[_month(at)]
        row["sold"] += p.sold_wh
        row["bought"] += p.bought_wh
        row["sales"] += p.received_micros
        row["fees"] += p.fees_micros
        row["credits"] += p.credited_micros
        row["charges"] += p.charged_micros
    if user_id is not None:
        for at, amount in await repo.shares_from_others(session, user_id, a, b):
            months[_month(at)]["shares"] += amount
    else:
        for epoch in await repo.region_epochs(session, region or "", a, b):
            if epoch.settlement_shared_micros:
                months[_month(epoch.start)]["shares"] += epoch.settlement_shared_micros
    rows = []
    for month, v in sorted(months.items()):
        net = v["sales"] + v["shares"] + v["credits"] - v["charges"]
        rows.append(
            RevenueRow(
                month=month,
                sold_kwh=wh_to_kwh(v["sold"]),
                bought_kwh=wh_to_kwh(v["bought"]),
                sales=micros_to_money(v["sales"]),
                fees=micros_to_money(v["fees"]),
                revenue_shares=micros_to_money(v["shares"]),
                grid_credits=micros_to_money(v["credits"]),
                grid_charges=micros_to_money(v["charges"]),
                net=micros_to_money(net),
            )
        )
    return RevenueReport(from_=a, to=b, region=region, currency=rt.settings.currency, rows=rows)
