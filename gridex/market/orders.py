"""Placing, modifying and cancelling orders: the order-entry rules applied (see
:mod:`gridex.market.entry_rules`), the epoch taken, what a buy holds reserved, and in a continuous
epoch the match at once.

Units: ``*_wh`` integer Wh, ``*_micros`` integer micros (prices per kWh). Every function runs in
the caller's unit of work and only flushes.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import User
from gridex.auth.service import Principal, TokenCaller
from gridex.core.clock import utc_iso
from gridex.core.config import Settings
from gridex.core.errors import Conflict, GridexError, ValidationFailed
from gridex.core.metrics import ORDERS, ORDERS_REFUSED, after_commit
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.models import ReferenceType
from gridex.market import entry_rules, matching, repository
from gridex.market.engine import trade_value_micros
from gridex.market.entry_rules import client_order_id_taken, gate_closed
from gridex.market.epochs import check_aligned, gate_closure_of, horizon_end, next_open_start
from gridex.market.errors import GateClosed, NoEligibleMeter
from gridex.market.models import (
    RESTING,
    Epoch,
    MarketOrder,
    Mechanism,
    OrderStatus,
    OrderType,
    Side,
)
from gridex.market.regions import MarketParams, default_band, params_of, tariff_band
from gridex.market.schemas import NewOrder, OrderChange, OrderOut
from gridex.market.service import get_or_create_epoch, own_order
from gridex.market.views import order_event, order_out
from gridex.regions.service import require_region


async def _resolve_region(
    session: AsyncSession, user: User, requested: str | None, side: Side
) -> str:
    if requested:
        await require_region(session, requested)
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
    if not entry_rules.gate_open_at(gate_closure_of(start, settings), now):
        return start, GateClosed(details={"epoch": utc_iso(start)})
    if start > horizon_end(now, settings):
        return start, ValidationFailed(
            f"The epoch is beyond the {settings.market_horizon_hours} h trading horizon",
            details={"field": "epoch", "horizon_end": utc_iso(horizon_end(now, settings))},
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
    now: datetime,
    *,
    take_epoch: bool,
    insert: bool = False,
    session_id: uuid.UUID | None = None,
) -> repository.OrderContext:
    """The entry rules' verdicts about ``order`` at ``now`` (see
    :func:`repository.order_context`)."""
    request = repository.OrderRequest(
        order, now, default_band(rt), rt.settings.epoch_minutes, session_id
    )
    try:
        context = await repository.order_context(
            session,
            request,
            available_account_id=ledger.user_account(order.user_id).id,
            take_auction_epoch=take_epoch,
            insert=insert,
        )
        # A region without settings takes its band from its tariff at the order's epoch. The
        # statement says whether the region has one, so that only such regions pay for the
        # lookup; then the checks run again with the tariff's band (an order the first run
        # inserted under the deployment's band is taken out first).
        region = context.found.region
        if context.settings is None and context.tariff_in_force and region is not None:
            band = await tariff_band(session, rt, region, order.epoch_start)
            if band is not None and band != request.default_band:
                if context.inserted:
                    await repository.delete_order(session, order.id)
                context = await repository.order_context(
                    session,
                    replace(request, default_band=band),
                    available_account_id=ledger.user_account(order.user_id).id,
                    take_auction_epoch=take_epoch,
                    insert=insert,
                )
        return context
    except IntegrityError as exc:  # a concurrent order with the same client_order_id
        if order.client_order_id is None:
            raise
        raise client_order_id_taken() from exc


async def place_order(
    session: AsyncSession, rt: Runtime, caller: Principal | TokenCaller, data: NewOrder
) -> OrderOut:
    """``_place`` counted: orders placed once committed, refusals by code."""
    try:
        placed = await _place(session, rt, caller, data)
    except GridexError as exc:
        ORDERS_REFUSED.labels(exc.code).inc()
        raise
    after_commit(session, ORDERS.labels(placed.side.value, placed.type.value).inc)
    return placed


async def _place(
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
            placed = await _place_with_session_check(session, rt, caller, data, start, now)
            if placed is not None:
                return placed
        # Not placed (an ended session, no region, a refusal, a new epoch...): the general
        # path, with the caller looked up.
        caller = await caller.principal(session, rt)
    region = await _resolve_region(session, caller.user, data.region, data.side)
    order = _new_order(caller.user.id, region, data, start, now)
    context = await _context(
        session, rt, order, now, take_epoch=epoch_error is None, insert=one_statement
    )
    refusal = entry_rules.first_refusal(context.found, epoch_error)
    if refusal is not None:
        raise refusal
    return await _complete(session, rt, order, context)


async def _place_with_session_check(
    session: AsyncSession,
    rt: Runtime,
    caller: TokenCaller,
    data: NewOrder,
    start: datetime,
    now: datetime,
) -> OrderOut | None:
    """The order-entry session check, a speed trick: the order's own statement checks the access
    token's session and user (``entry_rules.SESSION``) and inserts the order where every rule
    holds, instead of a lookup of the caller before it. It bought about 1,020 -> 1,130 orders/s
    in bench/orders.py (PostgreSQL, 32 clients, one worker). None when the statement did not
    place the order: the caller then takes the general path."""
    # Without a region, the statement takes the caller's own.
    order = _new_order(caller.claims.user_id, data.region, data, start, now)
    context = await _context(
        session,
        rt,
        order,
        now,
        take_epoch=True,
        insert=True,
        session_id=caller.claims.session_id,
    )
    if not context.inserted:
        return None
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
    order.reserved_micros = 0  # the limit order's reservation is made here, as any other's
    await _hold(
        session,
        order,
        _required_reservation(order),
        now,
        f"Buy order for epoch {utc_iso(order.epoch_start)}",
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


async def _lock_for_change(
    session: AsyncSession, rt: Runtime, principal: Principal, order_id: uuid.UUID, *, rematch: bool
) -> tuple[MarketOrder, Epoch, int]:
    """The caller's order, locked, with its epoch taken (still open); else 404 / 409."""
    order = await own_order(session, principal.user.id, order_id)
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
    if change.quantity_wh is not None:
        if change.quantity_wh <= order.filled_wh:
            raise ValidationFailed(
                "quantity_kwh must be above what is already filled",
                details={"field": "quantity_kwh"},
            )
        order.quantity_wh = change.quantity_wh
    now = rt.clock.now()
    context = await _context(session, rt, order, now, take_epoch=False)
    rules: list[entry_rules.Rule] = []
    if change.limit_price_micros is not None:
        rules += (entry_rules.BAND, entry_rules.SELF_TRADE)
    if change.quantity_wh is not None:
        rules.append(entry_rules.CAPACITY)
    for rule in rules:
        if not context.found.holds(rule):
            raise entry_rules.refusal_of(rule, context.found)
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
