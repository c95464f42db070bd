"""The market's service: epochs, region settings, placing, modifying and cancelling orders, and
the read side. Clearing and continuous matching are in :mod:`gridex.market.clearing`.

Units: ``*_wh`` integer Wh, ``*_micros`` integer micros (prices per kWh). Every function runs in
the caller's unit of work and only flushes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.service import Principal, TokenCaller
from gridex.core.config import Settings
from gridex.core.errors import Conflict, GridexError, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageParams, paginate
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, money_to_micros, round_half_even
from gridex.ledger import service as ledger
from gridex.ledger.errors import OutstandingDebt
from gridex.ledger.models import ReferenceType
from gridex.market import clearing, repository
from gridex.market.engine import Order as EngineOrder
from gridex.market.engine import Side as EngineSide
from gridex.market.engine import aggregate_levels, trade_value_micros
from gridex.market.errors import GateClosed, NoEligibleMeter, PriceOutOfBounds
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
    Trade,
)
from gridex.market.schemas import (
    ClearingOut,
    CurrentEpochsOut,
    EpochOut,
    FillOut,
    HistoryOut,
    LevelOut,
    MarketDataOut,
    OpenInterestOut,
    OrderBookOut,
    OrderDetailOut,
    OrderIn,
    OrderOut,
    OrderUpdate,
    PublicTradeOut,
    RegionSettingsIn,
    RegionSettingsOut,
    SettlementOut,
    TradeOut,
)
from gridex.users.models import User

_EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=UTC)


# --- epochs in time -----------------------------------------------------------------------------


def epoch_length(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.epoch_minutes)


def floor_epoch(at: datetime, settings: Settings) -> datetime:
    """Start of the epoch containing ``at`` (epochs are aligned to UTC, named by start)."""
    length = epoch_length(settings)
    return at - (at - _EPOCH_ZERO) % length


def next_open_start(now: datetime, settings: Settings) -> datetime:
    """The earliest epoch whose gate closure is still ahead of ``now``."""
    return floor_epoch(now + timedelta(seconds=settings.gate_closure_seconds), settings) + (
        epoch_length(settings)
    )


def gate_closure_of(start: datetime, settings: Settings) -> datetime:
    return start - timedelta(seconds=settings.gate_closure_seconds)


def horizon_end(now: datetime, settings: Settings) -> datetime:
    """The latest epoch start orders may name."""
    return now + timedelta(hours=settings.market_horizon_hours)


def epoch_row(
    region: str, start: datetime, settings: Settings, mechanism: Mechanism, now: datetime
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "region": region,
        "start": start,
        "end": start + epoch_length(settings),
        "gate_closure": gate_closure_of(start, settings),
        "state": EpochState.open,
        "mechanism": mechanism,
        "seq_counter": 0,
        "created_at": now,
    }


def check_aligned(start: datetime, settings: Settings) -> datetime:
    start = start.astimezone(UTC)
    if floor_epoch(start, settings) != start:
        raise ValidationFailed(
            f"An epoch starts on a {settings.epoch_minutes}-minute boundary (UTC)",
            details={"field": "epoch"},
        )
    return start


# --- region settings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarketParams:
    region: str
    mechanism: Mechanism
    min_price_micros: int
    max_price_micros: int
    fee_bps: int
    source: str
    updated_at: datetime | None


async def market_params(session: AsyncSession, rt: Runtime, region: str) -> MarketParams:
    """The region's settings, or the deployment defaults for a region without any."""
    return params_of(rt, region, await repository.region_settings(session, region))


def params_of(
    rt: Runtime, region: str, row: RegionSettings | repository.RegionRow | None
) -> MarketParams:
    """The region's settings from its row, or the deployment defaults without one."""
    if row is not None:
        return MarketParams(
            region,
            row.mechanism,
            row.min_price_micros,
            row.max_price_micros,
            row.fee_bps,
            "region",
            row.updated_at,
        )
    s = rt.settings
    return MarketParams(
        region,
        Mechanism(s.market_mechanism),
        money_to_micros(s.min_price),
        money_to_micros(s.max_price),
        s.fee_bps,
        "default",
        None,
    )


def _params_out(params: MarketParams) -> RegionSettingsOut:
    return RegionSettingsOut(
        region=params.region,
        mechanism=params.mechanism,
        min_price=params.min_price_micros,
        max_price=params.max_price_micros,
        fee_bps=params.fee_bps,
        source="region" if params.source == "region" else "default",
        updated_at=params.updated_at,
    )


async def get_region_settings(session: AsyncSession, rt: Runtime, region: str) -> RegionSettingsOut:
    return _params_out(await market_params(session, rt, region))


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


def effective_state(epoch: Epoch, now: datetime) -> EpochState:
    """The stored state, except that an open epoch past gate closure reads as closed even
    before the clearing job has run."""
    if epoch.state is EpochState.open and now >= epoch.gate_closure:
        return EpochState.closed
    return epoch.state


def epoch_out(epoch: Epoch, now: datetime) -> EpochOut:
    clearing_out = None
    if epoch.cleared_at is not None and epoch.trades_hash is not None:
        clearing_out = ClearingOut(
            price=epoch.price_micros,
            volume_kwh=epoch.volume_wh or 0,
            buy_orders=epoch.buy_orders or 0,
            sell_orders=epoch.sell_orders or 0,
            trades=epoch.trade_count or 0,
            trades_hash=epoch.trades_hash,
            cleared_at=epoch.cleared_at,
            chain_signature=epoch.chain_signature,
        )
    return EpochOut(
        region=epoch.region,
        start=epoch.start,
        end=epoch.end,
        gate_closure=epoch.gate_closure,
        state=effective_state(epoch, now),
        mechanism=epoch.mechanism,
        clearing=clearing_out,
        settlement=settlement_out(epoch),
    )


def settlement_out(epoch: Epoch) -> SettlementOut | None:
    """The epoch's settlement record, null until settled."""
    if epoch.settled_at is None or epoch.state is not EpochState.settled:
        return None
    return SettlementOut(
        settled_at=epoch.settled_at,
        paid_to_sellers=epoch.settlement_paid_micros or 0,
        fees=epoch.settlement_fees_micros or 0,
        revenue_shared=epoch.settlement_shared_micros or 0,
        shortfall_charges=epoch.settlement_charges_micros or 0,
        credits=epoch.settlement_credits_micros or 0,
        grid_import_price=epoch.settlement_import_price_micros or 0,
        feed_in_price=epoch.settlement_feed_in_price_micros or 0,
        adjustments=epoch.settlement_adjustments or 0,
        adjusted_at=epoch.settlement_adjusted_at,
    )


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


def order_out(order: MarketOrder) -> OrderOut:
    return OrderOut(
        id=order.id,
        side=order.side,
        type=order.type,
        region=order.region,
        epoch=order.epoch_start,
        quantity_kwh=order.quantity_wh,
        filled_kwh=order.filled_wh,
        limit_price=order.limit_price_micros,
        average_price=average_price(order),
        reserved=order.reserved_micros,
        status=order.status,
        client_order_id=order.client_order_id,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def average_price(order: MarketOrder) -> int | None:
    """Volume-weighted price of the fills per kWh (micros, half-even), None without fills."""
    if not order.filled_wh:
        return None
    return round_half_even(order.filled_value_micros * 1000, order.filled_wh)


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


def _check_band(price_micros: int, params: MarketParams) -> None:
    if not params.min_price_micros <= price_micros <= params.max_price_micros:
        raise PriceOutOfBounds(
            details={
                "min_price": _money(params.min_price_micros),
                "max_price": _money(params.max_price_micros),
            }
        )


def _money(micros: int) -> str:
    return micros_to_money(micros)


async def _lock_open_epoch(
    session: AsyncSession, rt: Runtime, epoch: Epoch, *, exclusive: bool
) -> int:
    """Take the epoch for an order write; returns the arrival seq. ``GATE_CLOSED`` when its gate
    closure has passed or it is no longer open."""
    return await _take_epoch(
        session,
        rt,
        epoch.id,
        epoch.start,
        epoch.gate_closure,
        epoch.mechanism,
        exclusive=exclusive,
    )


def _client_order_id_taken() -> Conflict:
    return Conflict(
        "You already have an order with this client_order_id",
        details={"field": "client_order_id"},
    )


def _gate_closed(start: datetime, gate_closure: datetime) -> GateClosed:
    return GateClosed(
        details={"epoch": start.isoformat(), "gate_closure": gate_closure.isoformat()}
    )


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
    if rt.clock.now() >= gate_closure:
        raise _gate_closed(start, gate_closure)
    locked = await repository.lock_epoch(session, epoch_id, exclusive=exclusive)
    if locked is None:
        raise _gate_closed(start, gate_closure)
    seq, locked_mechanism = locked
    if locked_mechanism is not mechanism:  # changed by a settings update meanwhile: rare
        raise Conflict("The epoch's market settings changed; retry")
    return seq


def _reference(order: MarketOrder) -> ledger.Reference:
    return ledger.Reference(ReferenceType.order, order.id)


def _required_reservation(order: MarketOrder) -> int:
    """What a buy order must hold: its unfilled rest at its limit (market: the band's max)."""
    if order.side is not Side.buy:
        return 0
    return trade_value_micros(order.quantity_wh - order.filled_wh, order.effective_price_micros)


async def place_order(
    session: AsyncSession, rt: Runtime, caller: Principal | TokenCaller, data: OrderIn
) -> OrderOut:
    """Validate, reserve (buy: quantity x limit, market buys at the band's max price) and store
    an order; in a continuous epoch, match it at once against the resting orders.

    A ``TokenCaller`` (a verified access token whose session was not looked up) placing a limit
    order on PostgreSQL has its session checked by the statement that checks and inserts the
    order (:func:`repository.order_context`); an order that statement did not place, or any
    other, takes the general path with the caller looked up first, which refuses an ended
    session or an inactive user exactly as authentication does and words every refusal."""
    now = rt.clock.now()
    settings = rt.settings
    # The epoch's checks are reported after the band's (below), but its start is needed first.
    start_error: GridexError | None = None
    if data.epoch is None:
        start = next_open_start(now, settings)
    else:
        try:
            start = check_aligned(data.epoch, settings)
        except ValidationFailed as exc:
            start, start_error = data.epoch, exc
        else:
            if now >= gate_closure_of(start, settings):
                start_error = GateClosed(details={"epoch": start.isoformat()})
            elif start > horizon_end(now, settings):
                start_error = ValidationFailed(
                    f"The epoch is beyond the {settings.market_horizon_hours} h trading horizon",
                    details={
                        "field": "epoch",
                        "horizon_end": horizon_end(now, settings).isoformat(),
                    },
                )
    one_statement = data.type is OrderType.limit and start_error is None and not rt.db.is_sqlite
    if isinstance(caller, TokenCaller) and not one_statement:
        caller = await caller.principal(session, rt)
    principal: Principal | None
    token: TokenCaller | None
    if isinstance(caller, TokenCaller):
        principal, token, user_id = None, caller, caller.claims.user_id
    else:
        principal, token, user_id = caller, None, caller.user.id
    # Without a region, the caller's own: resolved here, or by the statement for a token.
    region = data.region
    if principal is not None:
        region = await _resolve_region(session, principal.user, data.region, data.side)
    order = MarketOrder(
        id=uuid.uuid4(),
        user_id=user_id,
        region=region,
        epoch_start=start,
        side=data.side,
        type=data.type,
        quantity_wh=data.quantity_kwh,
        filled_wh=0,
        filled_value_micros=0,
        limit_price_micros=data.limit_price,
        reserved_micros=0,
        status=OrderStatus.open,
        client_order_id=data.client_order_id,
        created_at=now,
        updated_at=now,
    )
    # A limit order knows what it holds before the band is read: on PostgreSQL it is inserted
    # by the same statement when every check below passes (a refusal rolls it back).
    pending = None
    if data.type is OrderType.limit and start_error is None:
        assert data.limit_price is not None
        order.effective_price_micros = data.limit_price
        order.reserved_micros = _required_reservation(order)
        pending = repository.PendingOrder(
            order, money_to_micros(settings.min_price), money_to_micros(settings.max_price)
        )
    # One round trip for the region's settings, the checks and the epoch (on PostgreSQL an
    # auction epoch is taken with it).
    try:
        context = await repository.order_context(
            session,
            user_id=user_id,
            region=region,
            side=data.side,
            start=start,
            client_order_id=data.client_order_id,
            available_account_id=ledger.user_account(user_id).id,
            take_auction_epoch=start_error is None,
            pending=pending,
            caller=None if token is None else repository.CallerCheck(token.claims.session_id),
            now=now,
        )
    except IntegrityError as exc:  # a concurrent order with the same client_order_id
        if data.client_order_id is None:
            raise
        raise _client_order_id_taken() from exc
    if token is not None:
        if not context.inserted:
            # Not placed (an ended session, no region, a refusal, a new epoch...): the general
            # path, with the caller looked up.
            return await place_order(session, rt, await token.principal(session, rt), data)
        region = context.region
        assert region is not None
        order.region = region
    assert region is not None
    params = params_of(rt, region, context.settings)
    if data.type is OrderType.limit:
        assert data.limit_price is not None
        _check_band(data.limit_price, params)
        effective = data.limit_price
    else:
        effective = params.max_price_micros if data.side is Side.buy else params.min_price_micros
    if start_error is not None:
        raise start_error
    if not context.has_eligible_meter:
        raise NoEligibleMeter(details={"region": region, "side": data.side.value})
    if data.side is Side.buy and context.available_micros < 0:
        # As ledger.ensure_no_debt, from the balance read above.
        raise OutstandingDebt(details={"available": micros_to_money(context.available_micros)})
    if context.client_order_id_taken:
        raise _client_order_id_taken()

    epoch: Epoch | None = None
    mechanism: Mechanism
    taken = context.epoch
    if taken is not None and taken.mechanism is Mechanism.auction:
        epoch_id, mechanism = taken.id, taken.mechanism
        if taken.seq is not None:  # taken FOR SHARE by the read (PostgreSQL)
            if now >= taken.gate_closure or taken.state is not EpochState.open:
                raise _gate_closed(start, taken.gate_closure)
            seq = taken.seq
        else:
            seq = await _take_epoch(
                session, rt, taken.id, start, taken.gate_closure, mechanism, exclusive=False
            )
    else:
        epoch = await get_or_create_epoch(session, rt, region, start, params)
        epoch_id, mechanism = epoch.id, epoch.mechanism
        seq = await _lock_open_epoch(
            session, rt, epoch, exclusive=mechanism is Mechanism.continuous
        )

    order.epoch_id, order.seq = epoch_id, seq
    order.effective_price_micros = effective
    # Reserve first, so that the order is inserted once, with what it holds (an order inserted
    # with the checks above holds it already: the reservation commits with it or not at all).
    amount = _required_reservation(order)
    if amount > 0:
        await ledger.reserve(
            session,
            at=now,
            user_id=user_id,
            amount_micros=amount,
            reference=_reference(order),
            description=f"Buy order for epoch {start.isoformat()}",
        )
        order.reserved_micros = amount
    continuous = mechanism is Mechanism.continuous
    try:
        if continuous:  # matching works on the order in the session
            session.add(order)
            await session.flush()
        elif not context.inserted:  # nothing changes it any more: one plain INSERT
            await repository.insert_order(session, order)
    except IntegrityError as exc:  # a concurrent order with the same client_order_id
        raise _client_order_id_taken() from exc
    placed = order_out(order)
    emit(
        session,
        rt.pubsub,
        (f"user:{user_id}",),
        "order_placed",
        placed.model_dump(mode="json"),
        now,
    )
    if not continuous:
        return placed
    assert epoch is not None
    await clearing.match_continuous(session, rt, epoch, order, params.fee_bps)
    await session.flush()
    return order_out(order)


def _event(order: MarketOrder) -> dict[str, Any]:
    return order_out(order).model_dump(mode="json")


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


async def _rebalance(session: AsyncSession, rt: Runtime, order: MarketOrder) -> None:
    """Reserve or release the difference between what a buy holds and what it needs."""
    difference = _required_reservation(order) - order.reserved_micros
    now = rt.clock.now()
    if difference > 0:
        await ledger.ensure_no_debt(session, order.user_id)
        await ledger.reserve(
            session,
            at=now,
            user_id=order.user_id,
            amount_micros=difference,
            reference=_reference(order),
            description="Order modified: more held",
        )
    elif difference < 0:
        await ledger.release(
            session,
            at=now,
            user_id=order.user_id,
            amount_micros=-difference,
            reference=_reference(order),
            description="Order modified: less held",
        )
    order.reserved_micros += difference


async def modify_order(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    order_id: uuid.UUID,
    data: OrderUpdate,
) -> OrderOut:
    """Change quantity and/or limit while the epoch is open. The order loses its time priority
    (a new arrival seq) and a buy re-reserves the difference."""
    order, epoch, seq = await _lock_for_change(session, rt, principal, order_id, rematch=True)
    params = await market_params(session, rt, order.region)
    if data.limit_price is not None:
        if order.type is OrderType.market:
            raise ValidationFailed(
                "A market order has no limit price", details={"field": "limit_price"}
            )
        _check_band(data.limit_price, params)
        order.limit_price_micros = data.limit_price
        order.effective_price_micros = data.limit_price
    if data.quantity_kwh is not None:
        if data.quantity_kwh <= order.filled_wh:
            raise ValidationFailed(
                "quantity_kwh must be above what is already filled",
                details={"field": "quantity_kwh"},
            )
        order.quantity_wh = data.quantity_kwh
    now = rt.clock.now()
    order.seq = seq
    order.updated_at = now
    await _rebalance(session, rt, order)
    await session.flush()
    if epoch.mechanism is Mechanism.continuous:
        await clearing.match_continuous(session, rt, epoch, order, params.fee_bps)
        await session.flush()
    emit(session, rt.pubsub, (f"user:{order.user_id}",), "order_updated", _event(order), now)
    return order_out(order)


async def cancel_order(
    session: AsyncSession, rt: Runtime, principal: Principal, order_id: uuid.UUID
) -> OrderOut:
    """Cancel while the epoch is open; a buy's reservation goes back to ``available``."""
    order, _, _ = await _lock_for_change(session, rt, principal, order_id, rematch=False)
    now = rt.clock.now()
    if order.reserved_micros > 0:
        await ledger.release(
            session,
            at=now,
            user_id=order.user_id,
            amount_micros=order.reserved_micros,
            reference=_reference(order),
            description="Order cancelled",
        )
        order.reserved_micros = 0
    order.status = OrderStatus.cancelled
    order.updated_at = now
    await session.flush()
    emit(session, rt.pubsub, (f"user:{order.user_id}",), "order_updated", _event(order), now)
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


def trade_out(trade: Trade, user_id: uuid.UUID) -> TradeOut:
    return TradeOut(
        id=trade.id,
        region=trade.region,
        epoch=trade.epoch_start,
        side=Side.buy if trade.buyer_id == user_id else Side.sell,
        quantity_kwh=trade.quantity_wh,
        price=trade.price_micros,
        value=trade.value_micros,
        fee=trade.fee_micros,
        buy_order_id=trade.buy_order_id,
        sell_order_id=trade.sell_order_id,
        executed_at=trade.executed_at,
        settlement_status=trade.settlement_status,
    )


def public_trade_out(trade: Trade) -> PublicTradeOut:
    return PublicTradeOut(
        id=trade.id,
        region=trade.region,
        epoch=trade.epoch_start,
        quantity_kwh=trade.quantity_wh,
        price=trade.price_micros,
        executed_at=trade.executed_at,
    )


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
    cleared = await clearing.clear_epoch(session, rt, epoch.id)
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
