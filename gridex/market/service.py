"""The market's service: region settings, epochs, placing, modifying and cancelling orders, the
read side and the operators' clear and settle. Clearing is in :mod:`gridex.market.auction`,
continuous matching in :mod:`gridex.market.matching`, the order-entry rules in
:mod:`gridex.market.entry_rules`.

Units: ``*_wh`` integer Wh, ``*_micros`` integer micros (prices per kWh). Every function runs in
the caller's unit of work and only flushes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.service import Principal
from gridex.core.clock import utc_iso
from gridex.core.errors import Conflict, NotFound
from gridex.core.pagination import Page, PageParams, paginate
from gridex.core.runtime import Runtime
from gridex.core.units import round_half_even
from gridex.market import auction, repository, settlement
from gridex.market.engine import Order as EngineOrder
from gridex.market.engine import Side as EngineSide
from gridex.market.engine import aggregate_levels
from gridex.market.epochs import (
    check_aligned,
    epoch_length,
    epoch_row,
    floor_epoch,
    gate_closure_of,
    horizon_end,
    next_open_start,
)
from gridex.market.models import (
    Epoch,
    EpochState,
    MarketOrder,
    OrderStatus,
    RegionSettings,
    Side,
)
from gridex.market.regions import MarketParams, market_params
from gridex.market.schemas import (
    CurrentEpochsOut,
    EpochOut,
    FillOut,
    HistoryOut,
    LevelOut,
    MarketDataOut,
    OpenInterestOut,
    OrderBookOut,
    OrderDetailOut,
    OrderOut,
    PublicTradeOut,
    RegionSettingsIn,
    RegionSettingsOut,
    TradeOut,
)
from gridex.market.views import (
    effective_state,
    epoch_out,
    order_out,
    params_out,
    public_trade_out,
    trade_out,
)
from gridex.regions import service as regions

# --- region settings ----------------------------------------------------------------------------


async def get_region_settings(session: AsyncSession, rt: Runtime, region: str) -> RegionSettingsOut:
    """An existing region's market settings (its own, or the defaults it uses); 404 else."""
    known = await regions.get_region(session, region)
    if known is None:
        raise NotFound("No such region")
    return params_out(await market_params(session, rt, region), known)


async def list_region_settings(session: AsyncSession, rt: Runtime) -> list[RegionSettingsOut]:
    """Every region with the market settings in force there."""
    return [
        params_out(await market_params(session, rt, region.name), region)
        for region in await regions.list_regions(session)
    ]


async def put_region_settings(
    session: AsyncSession, rt: Runtime, principal: Principal, region: str, data: RegionSettingsIn
) -> RegionSettingsOut:
    """Replace a region's settings, creating the region when it does not exist (admins only
    reach this). The band and fee apply to new orders and to clearings from now on; the
    mechanism to new epochs and to open epochs that have no order yet."""
    now = rt.clock.now()
    known, created = await regions.create_region(
        session, region, at=now, timezone=data.timezone or "UTC", actor_id=principal.user.id
    )
    if created:
        record(
            session,
            at=now,
            action="region.created",
            actor_id=principal.user.id,
            subject_type="region",
            subject_id=region,
            details={"timezone": known.timezone},
        )
    elif data.timezone is not None and data.timezone != known.timezone:
        known.timezone = regions.check_timezone(data.timezone)
    approval_before = known.meter_approval
    if data.meter_approval is not None:
        known.meter_approval = data.meter_approval
    row = await repository.region_settings(session, region)
    before = None
    if row is None:
        row = RegionSettings(region=region)
        session.add(row)
    else:
        before = {"mechanism": row.mechanism.value, "fee_bps": row.fee_bps}
    row.mechanism = data.mechanism
    row.min_price_micros = data.min_price
    row.max_price_micros = data.max_price
    row.fee_bps = data.fee_bps
    row.updated_at = now
    row.updated_by_id = principal.user.id
    await session.flush()
    await repository.set_open_epochs_mechanism(session, region, data.mechanism, now)
    record(
        session,
        at=now,
        action="market.region_settings_updated",
        actor_id=principal.user.id,
        subject_type="region",
        subject_id=region,
        details={
            "before": before,
            "mechanism": data.mechanism.value,
            "min_price_micros": data.min_price,
            "max_price_micros": data.max_price,
            "fee_bps": data.fee_bps,
            "meter_approval": known.meter_approval.value,
            "meter_approval_before": approval_before.value,
        },
    )
    return await get_region_settings(session, rt, region)


# --- epochs -------------------------------------------------------------------------------------


async def get_or_create_epoch(
    session: AsyncSession,
    rt: Runtime,
    region: str,
    start: datetime,
    params: MarketParams | None = None,
) -> Epoch:
    """The stored epoch, created first if missing (``params``: the region's, when known)."""
    epoch = await repository.get_epoch(session, region, start)
    if epoch is None:
        if params is None:
            params = await market_params(session, rt, region)
        row = epoch_row(region, start, rt.settings, params.mechanism, rt.clock.now())
        await repository.ensure_epochs(session, [row])
        epoch = await repository.get_epoch(session, region, start)
        assert epoch is not None
    return epoch


async def epoch_view(session: AsyncSession, rt: Runtime, region: str, start: datetime) -> EpochOut:
    """An epoch as stored, or as it would be created (reads never write)."""
    now = rt.clock.now()
    epoch = await repository.get_epoch(session, region, start)
    if epoch is not None:
        return epoch_out(epoch, now)
    params = await market_params(session, rt, region)
    virtual = Epoch(**epoch_row(region, start, rt.settings, params.mechanism, now))
    if now >= virtual.gate_closure:
        virtual.state = EpochState.closed
    return epoch_out(virtual, now)


async def get_epoch(session: AsyncSession, rt: Runtime, region: str, start: datetime) -> EpochOut:
    start = check_aligned(start, rt.settings)
    return await epoch_view(session, rt, region, start)


async def current_epochs(session: AsyncSession, rt: Runtime, region: str) -> CurrentEpochsOut:
    now = rt.clock.now()
    return CurrentEpochsOut(
        open=await epoch_view(session, rt, region, next_open_start(now, rt.settings)),
        delivering=await epoch_view(session, rt, region, floor_epoch(now, rt.settings)),
    )


async def list_epochs(
    session: AsyncSession,
    rt: Runtime,
    region: str,
    page: PageParams,
    *,
    since: datetime | None,
    until: datetime | None,
    state: EpochState | None,
) -> Page[EpochOut]:
    rows, total = await paginate(
        session, repository.epochs_query(region, since, until, state), page
    )
    now = rt.clock.now()
    return Page.build([epoch_out(e, now) for e in rows], total, page)


async def ensure_horizon(session: AsyncSession, rt: Runtime, regions: list[str]) -> int:
    """Create the missing epochs from the next open one to the horizon for ``regions``."""
    now = rt.clock.now()
    first = next_open_start(now, rt.settings)
    last = horizon_end(now, rt.settings)
    length = epoch_length(rt.settings)
    rows: list[dict[str, Any]] = []
    for region in regions:
        params = await market_params(session, rt, region)
        start = first
        while start <= last:
            rows.append(epoch_row(region, start, rt.settings, params.mechanism, now))
            start += length
    await repository.ensure_epochs(session, rows)
    return len(rows)


# --- orders -------------------------------------------------------------------------------------


async def own_order(session: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID) -> MarketOrder:
    """The caller's order; 404 for an unknown or foreign one."""
    order = await repository.own_order(session, user_id, order_id)
    if order is None:
        raise NotFound("No such order")
    return order


async def get_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> OrderDetailOut:
    order = await own_order(session, principal.user.id, order_id)
    fills = await repository.fills_of(session, order)
    return OrderDetailOut(
        **dict(order_out(order)),
        fills=[
            FillOut(
                trade_id=t.id,
                quantity_kwh=t.quantity_wh,
                price=t.price_micros,
                executed_at=t.executed_at,
            )
            for t in fills
        ],
    )


async def list_orders(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    page: PageParams,
    *,
    status: OrderStatus | None,
    side: Side | None,
    epoch: datetime | None,
) -> Page[OrderOut]:
    start = check_aligned(epoch, rt.settings) if epoch is not None else None
    query = repository.orders_query(principal.user.id, status, side, start)
    rows, total = await paginate(session, query, page)
    return Page.build([order_out(o) for o in rows], total, page)


# --- read side ----------------------------------------------------------------------------------


async def orderbook(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    region: str,
    epoch: datetime | None,
) -> OrderBookOut:
    """Resting interest of one epoch per price level, best first; ``own_*`` are the caller's."""
    now = rt.clock.now()
    start = check_aligned(epoch, rt.settings) if epoch else next_open_start(now, rt.settings)
    view = await epoch_view(session, rt, region, start)
    stored = await repository.get_epoch(session, region, start)
    rows = await repository.book_rows(session, stored.id) if stored is not None else []
    orders = []
    own: dict[tuple[Side, int], list[int]] = {}
    for i, (user_id, side, price, remaining) in enumerate(rows):
        side = Side(side)
        engine_side = EngineSide.BUY if side is Side.buy else EngineSide.SELL
        orders.append(EngineOrder(str(i), engine_side, int(remaining), int(price), i))
        if user_id == principal.user.id:
            level = own.setdefault((side, int(price)), [0, 0])
            level[0] += int(remaining)
            level[1] += 1
    depth = aggregate_levels(orders)

    def levels(side: Side, items: tuple[Any, ...]) -> list[LevelOut]:
        return [
            LevelOut(
                price=level.price_micros,
                quantity_kwh=level.quantity_wh,
                orders=level.orders,
                own_quantity_kwh=own.get((side, level.price_micros), [0, 0])[0],
                own_orders=own.get((side, level.price_micros), [0, 0])[1],
            )
            for level in items
        ]

    return OrderBookOut(
        region=region,
        epoch=start,
        state=view.state,
        mechanism=view.mechanism,
        bids=levels(Side.buy, depth.bids),
        asks=levels(Side.sell, depth.asks),
    )


async def market_data(session: AsyncSession, rt: Runtime, region: str) -> MarketDataOut:
    now = rt.clock.now()
    last = await repository.last_cleared(session, region)
    count, wh, value, high, low = await repository.trade_stats(
        session, region, now - timedelta(hours=24)
    )
    next_start = next_open_start(now, rt.settings)
    next_epoch = await repository.get_epoch(session, region, next_start)
    interest = await repository.open_interest(session, next_epoch.id if next_epoch else None)
    return MarketDataOut(
        region=region,
        currency=rt.settings.currency,
        last_price=last.price_micros if last else None,
        last_epoch=last.start if last else None,
        last_volume_kwh=(last.volume_wh or 0) if last else 0,
        vwap_24h=round_half_even(int(value) * 1000, int(wh)) if wh else None,
        high_24h=int(high) if high is not None else None,
        low_24h=int(low) if low is not None else None,
        volume_24h_kwh=int(wh),
        trades_24h=int(count),
        open_interest=OpenInterestOut(
            epoch=next_start,
            buy_kwh=interest[Side.buy][0],
            sell_kwh=interest[Side.sell][0],
            buy_orders=interest[Side.buy][1],
            sell_orders=interest[Side.sell][1],
        ),
    )


async def history(
    session: AsyncSession,
    region: str,
    page: PageParams,
    *,
    since: datetime | None,
    until: datetime | None,
) -> Page[HistoryOut]:
    rows, total = await paginate(session, repository.history_query(region, since, until), page)
    items = [
        HistoryOut(
            epoch=e.start,
            state=e.state,
            price=e.price_micros,
            volume_kwh=e.volume_wh or 0,
            trades=e.trade_count or 0,
        )
        for e in rows
    ]
    return Page.build(items, total, page)


async def own_trades(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    page: PageParams,
    epoch: datetime | None,
) -> Page[TradeOut]:
    start = check_aligned(epoch, rt.settings) if epoch is not None else None
    rows, total = await paginate(
        session, repository.own_trades_query(principal.user.id, start), page
    )
    return Page.build([trade_out(t, principal.user.id) for t in rows], total, page)


async def recent_trades(
    session: AsyncSession, region: str | None, limit: int
) -> list[PublicTradeOut]:
    return [public_trade_out(t) for t in await repository.recent_trades(session, region, limit)]


# --- clearing on demand -------------------------------------------------------------------------


async def clear_now(
    session: AsyncSession, rt: Runtime, principal: Principal, region: str, start: datetime
) -> EpochOut:
    """Operators: clear an epoch now (only after gate closure; clearing twice does nothing)."""
    start = check_aligned(start, rt.settings)
    now = rt.clock.now()
    if now < gate_closure_of(start, rt.settings):
        raise Conflict(
            "The epoch's gate closure has not passed yet",
            details={"gate_closure": utc_iso(gate_closure_of(start, rt.settings))},
        )
    epoch = await get_or_create_epoch(session, rt, region, start)
    cleared = await auction.clear_epoch(session, rt, epoch.id)
    return await operator_epoch_result(
        session, rt, principal, region, start, action="market.epoch_cleared", done=cleared
    )


async def operator_epoch_result(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    region: str,
    start: datetime,
    *,
    action: str,
    done: bool,
) -> EpochOut:
    """Audit an operator's clear or settle ("noop" when another run did it already) and answer
    the epoch as it is now."""
    now = rt.clock.now()
    record(
        session,
        at=now,
        action=action,
        actor_id=principal.user.id,
        subject_type="epoch",
        subject_id=f"{region}@{utc_iso(start)}",
        outcome="success" if done else "noop",
    )
    refreshed = await repository.get_epoch(session, region, start)
    assert refreshed is not None
    return epoch_out(refreshed, now)


async def settle_now(
    session: AsyncSession, rt: Runtime, principal: Principal, region: str, start: datetime
) -> EpochOut:
    """Operators: settle an epoch now, the same code as the jobs. A cleared epoch is first
    checked for delivery (interval over and readings in, or grace passed); settling a settled
    epoch again does nothing; anything else is 409 ``CONFLICT``."""
    start = check_aligned(start, rt.settings)
    now = rt.clock.now()
    epoch = await repository.get_epoch(session, region, start)
    if epoch is None or epoch.state not in (
        EpochState.cleared,
        EpochState.delivered,
        EpochState.settled,
    ):
        if epoch is not None:
            state = effective_state(epoch, now).value
        else:
            state = "closed" if now >= gate_closure_of(start, rt.settings) else "open"
        raise Conflict(
            "The epoch is not delivered yet: it has not been cleared",
            details={"state": state},
        )
    if epoch.state is EpochState.cleared:
        if not await settlement.deliverable(session, rt, epoch, now):
            raise Conflict(
                "The epoch is not delivered yet: its interval has not ended or readings are "
                "missing, and the grace period has not passed",
                details={
                    "state": epoch.state.value,
                    "end": utc_iso(epoch.end),
                    "grace_until": utc_iso(epoch.end + settlement.grace(rt)),
                },
            )
        await settlement.mark_delivered(session, epoch.id)
    settled = await settlement.settle_epoch(session, rt, epoch.id)
    return await operator_epoch_result(
        session, rt, principal, region, start, action="market.epoch_settled", done=settled
    )
