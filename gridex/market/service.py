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

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.service import Principal, TokenCaller
from gridex.core.clock import utc_iso
from gridex.core.config import Settings
from gridex.core.errors import Conflict, GridexError, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageParams, paginate
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import round_half_even
from gridex.ledger import service as ledger
from gridex.ledger.models import ReferenceType
from gridex.market import auction, entry_rules, matching, repository, settlement
from gridex.market.engine import Order as EngineOrder
from gridex.market.engine import Side as EngineSide
from gridex.market.engine import aggregate_levels, trade_value_micros
from gridex.market.entry_rules import client_order_id_taken, gate_closed
from gridex.market.epochs import (
    check_aligned,
    epoch_length,
    epoch_row,
    floor_epoch,
    gate_closure_of,
    horizon_end,
    next_open_start,
)
from gridex.market.errors import GateClosed, NoEligibleMeter
from gridex.market.models import (
    RESTING,
    Epoch,
    EpochState,
    MarketOrder,
    Mechanism,
    OrderStatus,
    OrderType,
    RegionSettings,
    Side,
)
from gridex.market.regions import MarketParams, default_band, market_params, params_of
from gridex.market.schemas import (
    CurrentEpochsOut,
    EpochOut,
    FillOut,
    HistoryOut,
    LevelOut,
    MarketDataOut,
    NewOrder,
    OpenInterestOut,
    OrderBookOut,
    OrderChange,
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
    order_event,
    order_out,
    params_out,
    public_trade_out,
    trade_out,
)
from gridex.users.models import User

# --- region settings ----------------------------------------------------------------------------


async def get_region_settings(session: AsyncSession, rt: Runtime, region: str) -> RegionSettingsOut:
    return params_out(await market_params(session, rt, region))


async def put_region_settings(
    session: AsyncSession, rt: Runtime, principal: Principal, region: str, data: RegionSettingsIn
) -> RegionSettingsOut:
    """Replace a region's settings. The band and fee apply to new orders and to clearings from
    now on; the mechanism to new epochs and to open epochs that have no order yet."""
    now = rt.clock.now()
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


async def _resolve_region(
    session: AsyncSession, user: User, requested: str | None, side: Side
) -> str:
    if requested:
        return requested
    if user.region:
        return user.region
    regions = await repository.eligible_regions(session, user.id, side)
    if len(regions) == 1:
        return regions[0]
    if not regions:
        raise NoEligibleMeter()
    raise ValidationFailed(
        "You have meters in several regions: say which one", details={"field": "region"}
    )


def _named_epoch(
    requested: datetime | None, now: datetime, settings: Settings
) -> tuple[datetime, GridexError | None]:
    """The epoch an order names (default: the next open one) and what is wrong with it, if
    anything: not on an epoch boundary, past its gate closure or beyond the horizon. Decided
    from the clock and settings alone; reported after the band (see entry_rules)."""
    if requested is None:
        return next_open_start(now, settings), None
    try:
        start = check_aligned(requested, settings)
    except ValidationFailed as exc:
        return requested, exc
    if now >= gate_closure_of(start, settings):
        return start, GateClosed(details={"epoch": start.isoformat()})
    if start > horizon_end(now, settings):
        return start, ValidationFailed(
            f"The epoch is beyond the {settings.market_horizon_hours} h trading horizon",
            details={"field": "epoch", "horizon_end": horizon_end(now, settings).isoformat()},
        )
    return start, None


async def _take_epoch(
    session: AsyncSession,
    rt: Runtime,
    epoch_id: uuid.UUID,
    start: datetime,
    gate_closure: datetime,
    mechanism: Mechanism,
    *,
    exclusive: bool,
) -> int:
    """Take the epoch for an order write; returns the arrival seq. ``GATE_CLOSED`` when its gate
    closure has passed or it is no longer open."""
    locked = await repository.lock_epoch(session, epoch_id, rt.clock.now(), exclusive=exclusive)
    if locked is None:
        raise gate_closed(start, gate_closure)
    seq, locked_mechanism = locked
    if locked_mechanism is not mechanism:  # changed by a settings update meanwhile: rare
        raise Conflict("The epoch's market settings changed; retry")
    return seq


async def _lock_open_epoch(
    session: AsyncSession, rt: Runtime, epoch: Epoch, *, exclusive: bool
) -> int:
    return await _take_epoch(
        session,
        rt,
        epoch.id,
        epoch.start,
        epoch.gate_closure,
        epoch.mechanism,
        exclusive=exclusive,
    )


def _reference(order: MarketOrder) -> ledger.Reference:
    return ledger.Reference(ReferenceType.order, order.id)


def _required_reservation(order: MarketOrder) -> int:
    """What a buy order must hold: its unfilled rest at its limit (market: the band's max)."""
    if order.side is not Side.buy:
        return 0
    return trade_value_micros(order.quantity_wh - order.filled_wh, order.effective_price_micros)


async def _hold(
    session: AsyncSession, order: MarketOrder, amount_micros: int, at: datetime, why: str
) -> None:
    """Move ``amount_micros`` between the buyer's ``available`` and ``reserved`` for ``order``
    (positive: reserve, refused beyond ``available``; negative: release)."""
    if amount_micros > 0:
        await ledger.reserve(
            session,
            at=at,
            user_id=order.user_id,
            amount_micros=amount_micros,
            reference=_reference(order),
            description=why,
        )
    elif amount_micros < 0:
        await ledger.release(
            session,
            at=at,
            user_id=order.user_id,
            amount_micros=-amount_micros,
            reference=_reference(order),
            description=why,
        )
    order.reserved_micros += amount_micros


def _new_order(
    user_id: uuid.UUID, region: str | None, data: NewOrder, start: datetime, now: datetime
) -> MarketOrder:
    """The order as it will be stored, before its epoch is taken. A limit order knows what it
    holds already, so that the order-entry statement can insert it as it is."""
    order = MarketOrder(
        id=uuid.uuid4(),
        user_id=user_id,
        region=region,
        epoch_start=start,
        side=data.side,
        type=data.type,
        quantity_wh=data.quantity_wh,
        filled_wh=0,
        filled_value_micros=0,
        limit_price_micros=data.limit_price_micros,
        reserved_micros=0,
        status=OrderStatus.open,
        client_order_id=data.client_order_id,
        created_at=now,
        updated_at=now,
    )
    if data.limit_price_micros is not None:
        order.effective_price_micros = data.limit_price_micros
        order.reserved_micros = _required_reservation(order)
    return order


async def _context(
    session: AsyncSession,
    rt: Runtime,
    order: MarketOrder,
    *,
    take_epoch: bool,
    insert: bool = False,
    session_id: uuid.UUID | None = None,
) -> repository.OrderContext:
    """The entry rules' verdicts about ``order`` (see :func:`repository.order_context`)."""
    request = repository.OrderRequest(order, rt.clock.now(), default_band(rt), session_id)
    try:
        return await repository.order_context(
            session,
            request,
            available_account_id=ledger.user_account(order.user_id).id,
            take_auction_epoch=take_epoch,
            insert=insert,
        )
    except IntegrityError as exc:  # a concurrent order with the same client_order_id
        if order.client_order_id is None:
            raise
        raise client_order_id_taken() from exc


async def place_order(
    session: AsyncSession, rt: Runtime, caller: Principal | TokenCaller, data: NewOrder
) -> OrderOut:
    """Validate, reserve (buy: quantity x limit, market buys at the band's max price) and store
    an order; in a continuous epoch, match it at once against the resting orders.

    A ``TokenCaller`` (a verified access token whose session was not looked up) placing a limit
    order where the order-entry statement inserts it has its session checked by that statement
    (``entry_rules.SESSION``); an order that statement did not place, or any other, takes the
    general path with the caller looked up first, which refuses an ended session or an inactive
    user exactly as authentication does and words every refusal."""
    now = rt.clock.now()
    start, epoch_error = _named_epoch(data.epoch, now, rt.settings)
    one_statement = (
        data.type is OrderType.limit
        and epoch_error is None
        and repository.inserts_with_checks(session)
    )
    if isinstance(caller, TokenCaller):
        if one_statement:
            # Without a region, the statement takes the caller's own.
            order = _new_order(caller.claims.user_id, data.region, data, start, now)
            context = await _context(
                session,
                rt,
                order,
                take_epoch=True,
                insert=True,
                session_id=caller.claims.session_id,
            )
            if context.inserted:
                return await _complete(session, rt, order, context)
        # Not placed (an ended session, no region, a refusal, a new epoch...): the general
        # path, with the caller looked up.
        caller = await caller.principal(session, rt)
    region = await _resolve_region(session, caller.user, data.region, data.side)
    order = _new_order(caller.user.id, region, data, start, now)
    context = await _context(
        session, rt, order, take_epoch=epoch_error is None, insert=one_statement
    )
    refusal = entry_rules.first_refusal(context.found, epoch_error)
    if refusal is not None:
        raise refusal
    return await _complete(session, rt, order, context)


async def _complete(
    session: AsyncSession, rt: Runtime, order: MarketOrder, context: repository.OrderContext
) -> OrderOut:
    """Place an order that passed every entry rule: take its epoch, reserve what a buy holds,
    store it (unless the order-entry statement did) and, in a continuous epoch, match it."""
    found = context.found
    assert found.region is not None
    order.region = found.region
    params = params_of(rt, found.region, context.settings)
    if order.type is OrderType.market:
        buy = order.side is Side.buy
        order.effective_price_micros = found.band_max_micros if buy else found.band_min_micros
    epoch = await _take_epoch_for(session, rt, order, context, params)
    # Reserve first, so that the order is inserted once, with what it holds (an order inserted
    # with the checks holds it already: the reservation commits with it or not at all).
    now = order.created_at
    order.reserved_micros = 0
    await _hold(
        session,
        order,
        _required_reservation(order),
        now,
        f"Buy order for epoch {order.epoch_start.isoformat()}",
    )
    try:
        if epoch is not None and epoch.mechanism is Mechanism.continuous:
            session.add(order)  # matching works on the order in the session
            await session.flush()
        elif not context.inserted:  # nothing changes it any more: one plain INSERT
            await repository.insert_order(session, order)
    except IntegrityError as exc:  # a concurrent order with the same client_order_id
        raise client_order_id_taken() from exc
    placed = order_out(order)
    channel = (f"user:{order.user_id}",)
    emit(session, rt.pubsub, channel, "order_placed", placed.model_dump(mode="json"), now)
    if epoch is None or epoch.mechanism is not Mechanism.continuous:
        return placed
    await matching.match_continuous(session, rt, epoch, order, params.fee_bps)
    await session.flush()
    return order_out(order)


async def _take_epoch_for(
    session: AsyncSession,
    rt: Runtime,
    order: MarketOrder,
    context: repository.OrderContext,
    params: MarketParams,
) -> Epoch | None:
    """Give ``order`` its epoch and arrival seq. An auction epoch read (and on PostgreSQL taken)
    by the order-entry statement is used as read (None is returned); any other epoch is
    created when missing and taken here (returned: continuous matching needs it)."""
    taken, start = context.epoch, order.epoch_start
    if taken is not None and taken.mechanism is Mechanism.auction:
        order.epoch_id = taken.id
        if taken.seq is None:
            order.seq = await _take_epoch(
                session, rt, taken.id, start, taken.gate_closure, taken.mechanism, exclusive=False
            )
        elif not context.found.holds(entry_rules.GATE):  # taken FOR SHARE by the read
            raise gate_closed(start, taken.gate_closure)
        else:
            order.seq = taken.seq
        return None
    assert order.region is not None
    epoch = await get_or_create_epoch(session, rt, order.region, start, params)
    order.epoch_id = epoch.id
    exclusive = epoch.mechanism is Mechanism.continuous
    order.seq = await _lock_open_epoch(session, rt, epoch, exclusive=exclusive)
    return epoch


async def _own_order(session: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID) -> MarketOrder:
    order = await repository.own_order(session, user_id, order_id)
    if order is None:
        raise NotFound("No such order")
    return order


async def _lock_for_change(
    session: AsyncSession, rt: Runtime, principal: Principal, order_id: uuid.UUID, *, rematch: bool
) -> tuple[MarketOrder, Epoch, int]:
    """The caller's order, locked, with its epoch taken (still open); else 404 / 409."""
    order = await _own_order(session, principal.user.id, order_id)
    epoch = await session.get(Epoch, order.epoch_id)
    assert epoch is not None
    if order.status not in RESTING:
        raise Conflict(f"The order is {order.status.value}", details={"status": order.status})
    exclusive = rematch and epoch.mechanism is Mechanism.continuous
    seq = await _lock_open_epoch(session, rt, epoch, exclusive=exclusive)
    locked = await repository.own_order(session, principal.user.id, order_id, lock=True)
    assert locked is not None
    if locked.status not in RESTING:  # filled or cancelled while we waited for the lock
        raise Conflict(f"The order is {locked.status.value}", details={"status": locked.status})
    return locked, epoch, seq


async def modify_order(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    order_id: uuid.UUID,
    change: OrderChange,
) -> OrderOut:
    """Change quantity and/or limit while the epoch is open. The order loses its time priority
    (a new arrival seq) and a buy re-reserves the difference."""
    order, epoch, seq = await _lock_for_change(session, rt, principal, order_id, rematch=True)
    if change.limit_price_micros is not None:
        if order.type is OrderType.market:
            raise ValidationFailed(
                "A market order has no limit price", details={"field": "limit_price"}
            )
        order.limit_price_micros = change.limit_price_micros
        order.effective_price_micros = change.limit_price_micros
    context = await _context(session, rt, order, take_epoch=False)
    if change.limit_price_micros is not None and not context.found.holds(entry_rules.BAND):
        raise entry_rules.refusal_of(entry_rules.BAND, context.found)
    if change.quantity_wh is not None:
        if change.quantity_wh <= order.filled_wh:
            raise ValidationFailed(
                "quantity_kwh must be above what is already filled",
                details={"field": "quantity_kwh"},
            )
        order.quantity_wh = change.quantity_wh
    now = rt.clock.now()
    order.seq = seq
    order.updated_at = now
    more = _required_reservation(order) - order.reserved_micros
    if more > 0 and not context.found.holds(entry_rules.DEBT):
        raise entry_rules.refusal_of(entry_rules.DEBT, context.found)
    held = "Order modified: more held" if more > 0 else "Order modified: less held"
    await _hold(session, order, more, now, held)
    await session.flush()
    if epoch.mechanism is Mechanism.continuous:
        fee_bps = params_of(rt, order.region, context.settings).fee_bps
        await matching.match_continuous(session, rt, epoch, order, fee_bps)
        await session.flush()
    emit(session, rt.pubsub, (f"user:{order.user_id}",), "order_updated", order_event(order), now)
    return order_out(order)


async def cancel_order(
    session: AsyncSession, rt: Runtime, principal: Principal, order_id: uuid.UUID
) -> OrderOut:
    """Cancel while the epoch is open; a buy's reservation goes back to ``available``."""
    order, _, _ = await _lock_for_change(session, rt, principal, order_id, rematch=False)
    now = rt.clock.now()
    await _hold(session, order, -order.reserved_micros, now, "Order cancelled")
    order.status = OrderStatus.cancelled
    order.updated_at = now
    await session.flush()
    emit(session, rt.pubsub, (f"user:{order.user_id}",), "order_updated", order_event(order), now)
    return order_out(order)


async def get_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> OrderDetailOut:
    order = await _own_order(session, principal.user.id, order_id)
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
            details={"gate_closure": gate_closure_of(start, rt.settings).isoformat()},
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
        subject_id=f"{region}@{start.isoformat()}",
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
