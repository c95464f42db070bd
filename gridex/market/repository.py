"""The market's SQL: epochs and their locks, orders, trades and the read-side aggregates.

Locking (see docs/market.md, "Concurrency"): every write to an epoch's orders first takes the
epoch row. On PostgreSQL an auction order takes it ``FOR SHARE`` (orders of one epoch proceed in
parallel) and clearing, continuous matching and a mechanism change take it exclusively, so
clearing waits for orders in flight and an order arriving after the claim sees the new state.
SQLite has one writer at a time; there the epoch row is updated (``seq_counter``) as the first
write, which both takes the write lock and hands out the arrival sequence.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    bindparam,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import AuthSession
from gridex.core.db import Precompiled
from gridex.ledger.models import LedgerAccount
from gridex.market.models import (
    RESTING,
    Epoch,
    EpochState,
    MarketOrder,
    Mechanism,
    OrderStatus,
    RegionSettings,
    Side,
    Trade,
)
from gridex.meters.models import Meter, MeterKind, MeterStatus
from gridex.users.models import User, UserStatus

Lock = Literal["share", "update"] | None

# Meter kinds that can deliver a side: a seller exports, a buyer imports.
_KINDS = {
    Side.sell: (MeterKind.production, MeterKind.bidirectional),
    Side.buy: (MeterKind.consumption, MeterKind.bidirectional),
}


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if _is_postgres(session) else sqlite.insert


# --- region settings ----------------------------------------------------------------------------


async def region_settings(session: AsyncSession, region: str) -> RegionSettings | None:
    return await session.get(RegionSettings, region)


# --- epochs -------------------------------------------------------------------------------------


async def ensure_epochs(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the epochs that do not exist yet (concurrent callers are fine)."""
    if not rows:
        return
    table = Epoch.__table__
    stmt = _insert(session)(table).on_conflict_do_nothing(index_elements=["region", "start"])
    for chunk in range(0, len(rows), 500):
        await session.execute(stmt, list(rows[chunk : chunk + 500]))


async def get_epoch(
    session: AsyncSession, region: str, start: datetime, *, lock: Lock = None
) -> Epoch | None:
    query = (
        select(Epoch)
        .where(Epoch.region == region, Epoch.start == start)
        .execution_options(populate_existing=True)
    )
    if lock is not None:
        query = query.with_for_update(read=lock == "share")
    return (await session.scalars(query)).one_or_none()


async def lock_epoch(
    session: AsyncSession, epoch_id: uuid.UUID, *, exclusive: bool
) -> tuple[int, Mechanism] | None:
    """Take the epoch for an order write; returns an arrival ``seq`` and the epoch's mechanism
    as of the lock, or None if the epoch is not open."""
    if _is_postgres(session):
        row = (
            await session.execute(
                select(Epoch.state, Epoch.mechanism, func.nextval(text("'market_order_seq'")))
                .where(Epoch.id == epoch_id)
                .with_for_update(of=Epoch, read=not exclusive)
            )
        ).one_or_none()
        if row is None or row[0] is not EpochState.open:
            return None
        return int(row[2]), row[1]
    locked = (
        await session.execute(
            update(Epoch)
            .where(Epoch.id == epoch_id, Epoch.state == EpochState.open)
            .values(seq_counter=Epoch.seq_counter + 1)
            .returning(Epoch.seq_counter, Epoch.mechanism)
        )
    ).one_or_none()
    return None if locked is None else (int(locked[0]), locked[1])


async def claim_epoch(session: AsyncSession, epoch_id: uuid.UUID, now: datetime) -> bool:
    """Claim an epoch for clearing (the conditional update takes its row exclusively)."""
    result = await session.execute(
        update(Epoch)
        .where(
            Epoch.id == epoch_id,
            Epoch.state.in_((EpochState.open, EpochState.closed)),
            Epoch.gate_closure <= now,
        )
        .values(state=EpochState.cleared, cleared_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


async def close_due_epochs(session: AsyncSession, now: datetime) -> None:
    await session.execute(
        update(Epoch)
        .where(Epoch.state == EpochState.open, Epoch.gate_closure <= now)
        .values(state=EpochState.closed)
        .execution_options(synchronize_session=False)
    )


async def due_epochs(session: AsyncSession, now: datetime, limit: int = 100) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(Epoch.id)
        .where(Epoch.state.in_((EpochState.open, EpochState.closed)), Epoch.gate_closure <= now)
        .order_by(Epoch.start)
        .limit(limit)
    )
    return list(rows)


async def set_open_epochs_mechanism(
    session: AsyncSession, region: str, mechanism: Mechanism, now: datetime
) -> None:
    """Apply a mechanism change to the region's open epochs that have no order yet."""
    has_orders = select(MarketOrder.id).where(MarketOrder.epoch_id == Epoch.id).exists()
    await session.execute(
        update(Epoch)
        .where(
            Epoch.region == region,
            Epoch.state == EpochState.open,
            Epoch.gate_closure > now,
            Epoch.mechanism != mechanism,
            ~has_orders,
        )
        .values(mechanism=mechanism)
        .execution_options(synchronize_session=False)
    )


def epochs_query(
    region: str, since: datetime | None, until: datetime | None, state: EpochState | None
) -> Select[Any]:
    query = select(Epoch).where(Epoch.region == region)
    if since is not None:
        query = query.where(Epoch.start >= since)
    if until is not None:
        query = query.where(Epoch.start < until)
    if state is not None:
        query = query.where(Epoch.state == state)
    return query.order_by(Epoch.start)


def history_query(region: str, since: datetime | None, until: datetime | None) -> Select[Any]:
    return epochs_query(region, since, until, None).where(Epoch.cleared_at.is_not(None))


async def last_cleared(session: AsyncSession, region: str) -> Epoch | None:
    return await session.scalar(
        select(Epoch)
        .where(Epoch.region == region, Epoch.price_micros.is_not(None))
        .order_by(Epoch.start.desc())
        .limit(1)
    )


# --- meters -------------------------------------------------------------------------------------


def _eligible(user_id: uuid.UUID, side: Side) -> Select[Any]:
    return select(Meter.region).where(
        Meter.owner_id == user_id,
        Meter.status == MeterStatus.active,
        Meter.deleted_at.is_(None),
        Meter.kind.in_(_KINDS[side]),
    )


async def has_eligible_meter(
    session: AsyncSession, user_id: uuid.UUID, region: str, side: Side
) -> bool:
    found = await session.scalar(_eligible(user_id, side).where(Meter.region == region).limit(1))
    return found is not None


async def eligible_regions(session: AsyncSession, user_id: uuid.UUID, side: Side) -> list[str]:
    return list(await session.scalars(_eligible(user_id, side).distinct().limit(2)))


async def meter_regions(session: AsyncSession) -> list[str]:
    """Regions with an active meter: the ones the horizon job keeps epochs for."""
    rows = await session.scalars(
        select(Meter.region)
        .where(Meter.status == MeterStatus.active, Meter.deleted_at.is_(None))
        .distinct()
    )
    return list(rows)


async def configured_regions(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(RegionSettings.region)))


# --- orders -------------------------------------------------------------------------------------


async def client_order_id_taken(
    session: AsyncSession, user_id: uuid.UUID, client_order_id: str
) -> bool:
    found = await session.scalar(
        select(MarketOrder.id).where(
            MarketOrder.user_id == user_id, MarketOrder.client_order_id == client_order_id
        )
    )
    return found is not None


async def own_order(
    session: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID, *, lock: bool = False
) -> MarketOrder | None:
    """The user's order (None for a foreign or unknown id: the caller answers 404)."""
    query = (
        select(MarketOrder)
        .where(MarketOrder.id == order_id, MarketOrder.user_id == user_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    return (await session.scalars(query)).one_or_none()


_ORDER_COLUMNS = tuple(
    (prop.key, prop.columns[0].key) for prop in sa_inspect(MarketOrder).column_attrs
)
_INSERT_ORDER = insert(cast(Table, MarketOrder.__table__))


async def insert_order(session: AsyncSession, order: MarketOrder) -> None:
    """Insert a new order with one INSERT, without adding the object to the session."""
    connection = await session.connection()
    await connection.execute(
        _INSERT_ORDER,
        {column: getattr(order, attr) for attr, column in _ORDER_COLUMNS},
    )


def orders_query(
    user_id: uuid.UUID,
    status: OrderStatus | None,
    side: Side | None,
    epoch_start: datetime | None,
) -> Select[Any]:
    query = select(MarketOrder).where(MarketOrder.user_id == user_id)
    if status is not None:
        query = query.where(MarketOrder.status == status)
    if side is not None:
        query = query.where(MarketOrder.side == side)
    if epoch_start is not None:
        query = query.where(MarketOrder.epoch_start == epoch_start)
    return query.order_by(MarketOrder.created_at.desc(), MarketOrder.seq.desc())


async def resting_orders(
    session: AsyncSession, epoch_id: uuid.UUID, *, exclude: uuid.UUID | None = None
) -> list[MarketOrder]:
    """The epoch's orders still in its book, in arrival order."""
    query = select(MarketOrder).where(
        MarketOrder.epoch_id == epoch_id, MarketOrder.status.in_(RESTING)
    )
    if exclude is not None:
        query = query.where(MarketOrder.id != exclude)
    return list(await session.scalars(query.order_by(MarketOrder.seq)))


async def book_rows(session: AsyncSession, epoch_id: uuid.UUID) -> list[Any]:
    """(user_id, side, price, remaining Wh) of the epoch's resting orders."""
    rows = await session.execute(
        select(
            MarketOrder.user_id,
            MarketOrder.side,
            MarketOrder.effective_price_micros,
            MarketOrder.quantity_wh - MarketOrder.filled_wh,
        ).where(MarketOrder.epoch_id == epoch_id, MarketOrder.status.in_(RESTING))
    )
    return list(rows)


async def open_interest(session: AsyncSession, epoch_id: uuid.UUID | None) -> dict[Side, Any]:
    totals = {Side.buy: (0, 0), Side.sell: (0, 0)}
    if epoch_id is None:
        return totals
    rows = await session.execute(
        select(
            MarketOrder.side,
            func.coalesce(func.sum(MarketOrder.quantity_wh - MarketOrder.filled_wh), 0),
            func.count(),
        )
        .where(MarketOrder.epoch_id == epoch_id, MarketOrder.status.in_(RESTING))
        .group_by(MarketOrder.side)
    )
    for side, wh, count in rows:
        totals[Side(side)] = (int(wh), int(count))
    return totals


@dataclass(frozen=True, slots=True)
class EpochTaken:
    """An epoch as read for an order; ``seq`` is set when the read also took it (PostgreSQL:
    an auction epoch ``FOR SHARE``, with its arrival seq)."""

    id: uuid.UUID
    state: EpochState
    mechanism: Mechanism
    gate_closure: datetime
    seq: int | None


@dataclass(frozen=True, slots=True)
class RegionRow:
    """A region's stored market settings (the columns of ``RegionSettings`` an order needs)."""

    mechanism: Mechanism
    min_price_micros: int
    max_price_micros: int
    fee_bps: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OrderContext:
    """What placing an order needs to know, read in one round trip."""

    settings: RegionRow | None
    has_eligible_meter: bool
    available_micros: int  # the user's ``available`` balance (0 without an account yet)
    client_order_id_taken: bool
    epoch: EpochTaken | None
    # The order given to order_context was inserted by the same statement.
    inserted: bool = False
    # Whether the caller's session is live and its user active (True when not asked).
    caller_ok: bool = True
    # The order's region (the user's own when none was given; None: they have none).
    region: str | None = None


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """A limit order for :func:`order_context` to insert when every check passes.

    ``order`` has every column but ``epoch_id`` and ``seq``, which the statement fills from the
    epoch it takes (and which the caller copies onto ``order`` afterwards), and ``region``, the
    one the statement resolved. The default band is the deployment's, for a region without
    settings."""

    order: MarketOrder
    default_min_price_micros: int
    default_max_price_micros: int


@dataclass(frozen=True, slots=True)
class CallerCheck:
    """An access token's session, for :func:`order_context` to check in its own statement
    instead of a lookup of its own: the session is live and its user active (as
    :func:`authenticate_bearer <gridex.auth.service.authenticate_bearer>` checks)."""

    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class _Shape:
    """What varies between the statements of :func:`order_context` (each built once)."""

    postgres: bool
    take: bool
    with_client_id: bool
    side: Side
    with_insert: bool
    caller: bool  # check the caller's session (CallerCheck)
    region_from_user: bool  # no region given: the user's own


_ORDER_CONTEXT: dict[_Shape, Precompiled] = {}
# Columns the statement fills itself when it inserts the order.
_FROM_CONTEXT = {"epoch_id": "epoch_id", "seq": "epoch_seq", "region": "resolved_region"}


def _with_insert(context: Select[Any], side: Side) -> Any:
    """``context`` plus the order's INSERT when the checks :func:`place_order
    <gridex.market.service.place_order>` makes in Python all pass (and the caller's session,
    when checked, is live); the result gains ``inserted``. The service still makes every check
    and raises on failure (which rolls the insert back with the transaction); this only saves
    round trips."""
    ctx = context.cte("ctx")
    orders = MarketOrder.__table__.c
    price = bindparam("o_limit_price_micros", type_=orders.limit_price_micros.type)
    conditions = [
        ctx.c.caller_ok,
        ctx.c.has_meter,
        ~ctx.c.taken,
        ctx.c.epoch_seq.is_not(None),
        ctx.c.epoch_state == EpochState.open,
        ctx.c.epoch_gate_closure > bindparam("now", type_=orders.created_at.type),
        func.coalesce(ctx.c.min_price_micros, bindparam("default_min", type_=BigInteger()))
        <= price,
        price
        <= func.coalesce(ctx.c.max_price_micros, bindparam("default_max", type_=BigInteger())),
    ]
    if side is Side.buy:  # as the service's debt check: no buy while available is negative
        conditions.append(func.coalesce(ctx.c.balance, 0) >= 0)
    columns = [column for column in MarketOrder.__table__.columns]
    values = [
        ctx.c[_FROM_CONTEXT[c.key]]
        if c.key in _FROM_CONTEXT
        else bindparam(f"o_{c.key}", type_=c.type)
        for c in columns
    ]
    inserted = (
        insert(cast(Table, MarketOrder.__table__))
        .from_select(columns, select(*values).where(*conditions))
        .returning(orders.id)
        .cte("inserted")
    )
    return select(
        *ctx.c,
        select(func.count()).select_from(inserted).scalar_subquery().label("inserted"),
    )


def _order_context_query(shape: _Shape) -> Precompiled:
    prepared = _ORDER_CONTEXT.get(shape)
    if prepared is not None:
        return prepared
    postgres, take, side = shape.postgres, shape.take, shape.side
    epochs = Epoch.__table__.c
    settings = RegionSettings.__table__.c
    meters = Meter.__table__.c
    orders = MarketOrder.__table__.c
    accounts = LedgerAccount.__table__.c
    users = User.__table__.c
    user_id = bindparam("user_id", type_=orders.user_id.type)
    region: Any = bindparam("region", type_=settings.region.type)
    if shape.region_from_user:
        region = func.coalesce(
            region, select(users.region).where(users.id == user_id).scalar_subquery()
        )
    epoch_columns = select(epochs.id, epochs.state, epochs.mechanism, epochs.gate_closure).where(
        epochs.region == region, epochs.start == bindparam("start", type_=epochs.start.type)
    )
    epoch: Any
    if postgres and take:
        epoch = (
            epoch_columns.add_columns(func.nextval(text("'market_order_seq'")).label("seq"))
            .where(epochs.mechanism == Mechanism.auction)
            .with_for_update(read=True)
            .lateral("e")
        )
    else:
        epoch = epoch_columns.add_columns(literal(None).label("seq")).subquery("e")
    meter = exists().where(
        meters.owner_id == user_id,
        meters.status == MeterStatus.active,
        meters.deleted_at.is_(None),
        # Not IN (...): an IN list is rendered again on every execution.
        or_(*(meters.kind == kind for kind in _KINDS[side])),
        meters.region == region,
    )
    balance = (
        select(accounts.balance_micros)
        .where(accounts.id == bindparam("account_id", type_=accounts.id.type))
        .scalar_subquery()
    )
    taken = (
        exists().where(
            orders.user_id == user_id,
            orders.client_order_id
            == bindparam("client_order_id", type_=orders.client_order_id.type),
        )
        if shape.with_client_id
        else false()
    )
    caller_ok: Any = true()
    if shape.caller:
        sessions = AuthSession.__table__.c
        caller_ok = exists().where(
            sessions.id == bindparam("session_id", type_=sessions.id.type),
            sessions.user_id == user_id,
            sessions.revoked_at.is_(None),
            users.id == sessions.user_id,
            users.status == UserStatus.active,
        )
    one = select(literal(1).label("one")).subquery("one")
    query = (
        select(
            settings.region.label("settings_region"),
            settings.mechanism,
            settings.min_price_micros,
            settings.max_price_micros,
            settings.fee_bps,
            settings.updated_at,
            meter.label("has_meter"),
            balance.label("balance"),
            taken.label("taken"),
            epoch.c.id.label("epoch_id"),
            epoch.c.state.label("epoch_state"),
            epoch.c.mechanism.label("epoch_mechanism"),
            epoch.c.gate_closure.label("epoch_gate_closure"),
            epoch.c.seq.label("epoch_seq"),
            caller_ok.label("caller_ok"),
            region.label("resolved_region"),
        )
        .select_from(one)
        .outerjoin(RegionSettings.__table__, settings.region == region)
        .outerjoin(epoch, true())
    )
    if shape.with_insert:
        query = _with_insert(query, side)
    prepared = _ORDER_CONTEXT[shape] = Precompiled(query)
    return prepared


async def order_context(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    region: str | None,
    side: Side,
    start: datetime,
    client_order_id: str | None,
    available_account_id: uuid.UUID,
    take_auction_epoch: bool,
    pending: PendingOrder | None = None,
    caller: CallerCheck | None = None,
    now: datetime | None = None,
) -> OrderContext:
    """The region's settings, whether the user has a meter for ``side`` there, their available
    balance, whether ``client_order_id`` is taken and the epoch at ``start``, in one statement.

    With ``take_auction_epoch`` on PostgreSQL the epoch is also taken ``FOR SHARE`` and given an
    arrival seq when it is an auction epoch (as :func:`lock_epoch` would); a continuous epoch
    then reads as missing, and the caller takes it the usual way. Then ``pending`` (with the
    time ``now``) is inserted by the same statement when every check passes: ``inserted`` says
    whether it was, else the caller inserts it (or refuses it) as usual. A concurrent order with
    the same ``client_order_id`` makes the statement raise ``IntegrityError``.

    ``caller`` adds the check of the caller's session, and ``pending`` is only inserted for a
    live one (``caller_ok``). Without ``region`` the user's own is used (``region``: None when
    they have none)."""
    postgres = _is_postgres(session)
    with_insert = postgres and take_auction_epoch and pending is not None
    statement = _order_context_query(
        _Shape(
            postgres,
            take_auction_epoch,
            client_order_id is not None,
            side,
            with_insert,
            caller=caller is not None,
            region_from_user=region is None,
        )
    )
    params: dict[str, Any] = {
        "region": region,
        "start": start,
        "user_id": user_id,
        "account_id": available_account_id,
    }
    if caller is not None:
        params["session_id"] = caller.session_id
    if client_order_id is not None:
        params["client_order_id"] = client_order_id
    if with_insert:
        assert pending is not None
        assert now is not None
        order = pending.order
        for attr, column in _ORDER_COLUMNS:
            if column not in _FROM_CONTEXT:
                params[f"o_{column}"] = getattr(order, attr)
        params["now"] = now
        params["default_min"] = pending.default_min_price_micros
        params["default_max"] = pending.default_max_price_micros
    connection = await session.connection()
    if postgres:  # compiled once: no cache key computed per order (see Precompiled)
        row = (await statement.execute(connection, params)).one()
    else:  # SQLite's datetimes need SQLAlchemy's result processing
        row = (await connection.execute(statement.statement, params)).one()
    settings = None
    if row.settings_region is not None:
        settings = RegionRow(
            Mechanism(row.mechanism),
            row.min_price_micros,
            row.max_price_micros,
            row.fee_bps,
            row.updated_at,
        )
    epoch = None
    if row.epoch_id is not None:
        epoch = EpochTaken(
            row.epoch_id,
            EpochState(row.epoch_state),
            Mechanism(row.epoch_mechanism),
            row.epoch_gate_closure,
            None if row.epoch_seq is None else int(row.epoch_seq),
        )
    return OrderContext(
        settings,
        bool(row.has_meter),
        int(row.balance or 0),
        bool(row.taken),
        epoch,
        inserted=with_insert and int(row.inserted) == 1,
        caller_ok=bool(row.caller_ok),
        region=row.resolved_region,
    )


# --- trades -------------------------------------------------------------------------------------


async def fills_of(session: AsyncSession, order: MarketOrder) -> list[Trade]:
    column = Trade.buy_order_id if order.side is Side.buy else Trade.sell_order_id
    return list(await session.scalars(select(Trade).where(column == order.id).order_by(Trade.seq)))


def own_trades_query(user_id: uuid.UUID, epoch_start: datetime | None) -> Select[Any]:
    query = select(Trade).where(or_(Trade.buyer_id == user_id, Trade.seller_id == user_id))
    if epoch_start is not None:
        query = query.where(Trade.epoch_start == epoch_start)
    return query.order_by(Trade.executed_at.desc(), Trade.seq.desc())


async def recent_trades(session: AsyncSession, region: str | None, limit: int) -> list[Trade]:
    query = select(Trade)
    if region is not None:
        query = query.where(Trade.region == region)
    rows = await session.scalars(
        query.order_by(Trade.executed_at.desc(), Trade.seq.desc()).limit(limit)
    )
    return list(rows)


async def epoch_trade_count(session: AsyncSession, epoch_id: uuid.UUID) -> int:
    return int(await session.scalar(select(func.count()).where(Trade.epoch_id == epoch_id)) or 0)


async def epoch_trades(session: AsyncSession, epoch_id: uuid.UUID) -> list[Trade]:
    return list(
        await session.scalars(select(Trade).where(Trade.epoch_id == epoch_id).order_by(Trade.seq))
    )


async def trade_stats(session: AsyncSession, region: str, since: datetime) -> Any:
    """(count, Wh, value micros, high, low) of the region's trades since ``since``."""
    return (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(Trade.quantity_wh), 0),
                func.coalesce(func.sum(Trade.value_micros), 0),
                func.max(Trade.price_micros),
                func.min(Trade.price_micros),
            ).where(Trade.region == region, Trade.executed_at >= since)
        )
    ).one()
