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
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    bindparam,
    delete,
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
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import AuthSession, User
from gridex.core.db import insert_or_ignore, is_postgres
from gridex.core.precompiled import Precompiled
from gridex.ledger.models import LedgerAccount
from gridex.market import entry_rules
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
from gridex.meters.models import Meter, MeterStatus
from gridex.tariffs.repository import tariff_in_force

Lock = Literal["share", "update"] | None

# --- region settings ----------------------------------------------------------------------------


async def region_settings(session: AsyncSession, region: str) -> RegionSettings | None:
    return await session.get(RegionSettings, region)


# --- epochs -------------------------------------------------------------------------------------


async def ensure_epochs(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the epochs that do not exist yet (concurrent callers are fine)."""
    if not rows:
        return
    stmt = insert_or_ignore(session, Epoch.__table__, conflict=["region", "start"])
    for chunk in range(0, len(rows), 500):
        await session.execute(stmt, list(rows[chunk : chunk + 500]))


async def epoch_by_id(session: AsyncSession, epoch_id: uuid.UUID) -> Epoch:
    """An epoch known to exist, read afresh (after a conditional update claimed it)."""
    epoch = await session.get(Epoch, epoch_id, populate_existing=True)
    assert epoch is not None
    return epoch


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
    session: AsyncSession, epoch_id: uuid.UUID, now: datetime, *, exclusive: bool
) -> tuple[int, Mechanism] | None:
    """Take the epoch for an order write; returns an arrival ``seq`` and the epoch's mechanism
    as of the lock, or None if its gate is not open (:func:`entry_rules.gate_open`)."""
    is_open = entry_rules.gate_open(Epoch.state, Epoch.gate_closure, now)
    if is_postgres(session):
        row = (
            await session.execute(
                select(is_open, Epoch.mechanism, func.nextval(text("'market_order_seq'")))
                .where(Epoch.id == epoch_id)
                .with_for_update(of=Epoch, read=not exclusive)
            )
        ).one_or_none()
        if row is None or not row[0]:
            return None
        return int(row[2]), row[1]
    locked = (
        await session.execute(
            update(Epoch)
            .where(Epoch.id == epoch_id, is_open)
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
    """Cleared epochs, newest first: the recent ones are what a chart or a reader wants on the
    first page."""
    query = epochs_query(region, since, until, None).where(Epoch.cleared_at.is_not(None))
    return query.order_by(None).order_by(Epoch.start.desc())


async def last_cleared(session: AsyncSession, region: str) -> Epoch | None:
    return await session.scalar(
        select(Epoch)
        .where(Epoch.region == region, Epoch.price_micros.is_not(None))
        .order_by(Epoch.start.desc())
        .limit(1)
    )


async def cleared_prices(
    session: AsyncSession, region: str, since: datetime, until: datetime
) -> list[tuple[datetime, int, int]]:
    """``(start, price_micros, volume_wh)`` of the region's epochs that cleared with a trade,
    starting in ``[since, until)``, oldest first (the tariffs' forecast and analytics)."""
    rows = await session.execute(
        select(Epoch.start, Epoch.price_micros, Epoch.volume_wh)
        .where(
            Epoch.region == region,
            Epoch.start >= since,
            Epoch.start < until,
            Epoch.price_micros.is_not(None),
        )
        .order_by(Epoch.start)
    )
    return [(start, int(price or 0), int(volume or 0)) for start, price, volume in rows]


# --- meters -------------------------------------------------------------------------------------


async def eligible_regions(session: AsyncSession, user_id: uuid.UUID, side: Side) -> list[str]:
    """Up to two regions where the user has a meter that can deliver ``side``."""
    query = select(Meter.region).where(entry_rules.eligible_meter(user_id, side))
    return list(await session.scalars(query.distinct().limit(2)))


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

    found: entry_rules.Found  # every entry rule's verdict
    settings: RegionRow | None
    epoch: EpochTaken | None
    # The order given to order_context was inserted by the same statement.
    inserted: bool = False
    # The region has a tariff schedule or override in force at the order's epoch.
    tariff_in_force: bool = False


@dataclass(frozen=True, slots=True)
class _Shape:
    """What varies between the statements of :func:`order_context` (each built once)."""

    postgres: bool
    take: bool  # take an auction epoch FOR SHARE, with its arrival seq
    side: Side
    limit: bool  # a limit price is given: the band applies
    with_client_id: bool
    caller: bool  # check the caller's session (entry_rules.SESSION)
    region_from_user: bool  # no region given: the user's own
    with_insert: bool


_ORDER_CONTEXT: dict[_Shape, Precompiled] = {}
_REPORTS: dict[_Shape, Select[Any]] = {}
# Columns the statement fills itself when it inserts the order.
_FROM_CONTEXT = {"epoch_id": "epoch_id", "seq": "epoch_seq", "region": "resolved_region"}
_ORDERS = MarketOrder.__table__.c


def _order_value(column: str) -> Any:
    """The bound parameter of one of the order's columns, for the fast path's insert."""
    return bindparam(f"o_{column}", type_=_ORDERS[column].type)


def _with_insert(context: Select[Any], rules: Sequence[entry_rules.Rule]) -> Any:
    """``context`` plus the order's INSERT where every rule's verdict holds and the epoch was
    taken; the result gains ``inserted``. Where a rule fails nothing is inserted and the
    service raises its refusal from the same verdicts; a later refusal (the reservation's
    ``INSUFFICIENT_FUNDS``) rolls the insert back with the transaction. This only saves round
    trips."""
    ctx = context.cte("ctx")
    columns = list(MarketOrder.__table__.columns)
    values = [
        ctx.c[_FROM_CONTEXT[c.key]] if c.key in _FROM_CONTEXT else _order_value(c.key)
        for c in columns
    ]
    conditions = [ctx.c.epoch_seq.is_not(None), *(ctx.c[rule.verdict] for rule in rules)]
    inserted = (
        insert(cast(Table, MarketOrder.__table__))
        .from_select(columns, select(*values).where(*conditions))
        .returning(_ORDERS.id)
        .cte("inserted")
    )
    return select(
        *ctx.c,
        select(func.count()).select_from(inserted).scalar_subquery().label("inserted"),
    )


def _epoch_source(shape: _Shape, region: Any) -> Any:
    """The epoch at ``start`` in ``region``; taken ``FOR SHARE`` with an arrival seq when
    ``shape.take`` (then a continuous epoch reads as missing)."""
    epochs = Epoch.__table__.c
    epoch_columns = select(epochs.id, epochs.state, epochs.mechanism, epochs.gate_closure).where(
        epochs.region == region, epochs.start == bindparam("start", type_=epochs.start.type)
    )
    if shape.take:
        return (
            epoch_columns.add_columns(func.nextval(text("'market_order_seq'")).label("seq"))
            .where(epochs.mechanism == Mechanism.auction)
            .with_for_update(read=True)
            .lateral("e")
        )
    return epoch_columns.add_columns(literal(None).label("seq")).subquery("e")


def _order_context_query(shape: _Shape) -> Precompiled:
    prepared = _ORDER_CONTEXT.get(shape)
    if prepared is not None:
        return prepared
    settings = RegionSettings.__table__.c
    accounts = LedgerAccount.__table__.c
    users = User.__table__.c
    user_id = bindparam("user_id", type_=_ORDERS.user_id.type)
    region: Any = bindparam("region", type_=settings.region.type)
    if shape.region_from_user:
        region = func.coalesce(
            region, select(users.region).where(users.id == user_id).scalar_subquery()
        )
    epoch = _epoch_source(shape, region)
    src = entry_rules.Sources(
        user_id=user_id,
        region=region,
        side=shape.side,
        price=_order_value("limit_price_micros") if shape.limit else None,
        now=bindparam("now", type_=_ORDERS.created_at.type),
        band_min=func.coalesce(settings.min_price_micros, bindparam("default_min", BigInteger())),
        band_max=func.coalesce(settings.max_price_micros, bindparam("default_max", BigInteger())),
        available=select(accounts.balance_micros)
        .where(accounts.id == bindparam("account_id", type_=accounts.id.type))
        .scalar_subquery(),
        client_order_id=_order_value("client_order_id") if shape.with_client_id else None,
        session_id=bindparam("session_id", type_=AuthSession.id.type) if shape.caller else None,
        epoch_state=epoch.c.state,
        epoch_gate_closure=epoch.c.gate_closure,
        epoch_id=epoch.c.id,
        order_id=_order_value("id"),
        quantity_wh=_order_value("quantity_wh"),
        epoch_minutes=bindparam("epoch_minutes", type_=BigInteger()),
    )
    rules = [rule for rule in entry_rules.ALL if rule.applies(src)]
    reports = {
        label: expression.label(label)
        for rule in rules
        if rule.reports is not None
        for label, expression in rule.reports(src).items()
    }
    one = select(literal(1).label("one")).subquery("one")
    query = (
        select(
            settings.region.label("settings_region"),
            settings.mechanism,
            settings.min_price_micros,
            settings.max_price_micros,
            settings.fee_bps,
            settings.updated_at,
            src.band_min.label("band_min"),
            src.band_max.label("band_max"),
            src.available.label("balance"),
            epoch.c.id.label("epoch_id"),
            epoch.c.state.label("epoch_state"),
            epoch.c.mechanism.label("epoch_mechanism"),
            epoch.c.gate_closure.label("epoch_gate_closure"),
            epoch.c.seq.label("epoch_seq"),
            region.label("resolved_region"),
            tariff_in_force(region, bindparam("start", type_=Epoch.__table__.c.start.type)).label(
                "tariff_in_force"
            ),
            *(rule.condition(src).label(rule.verdict) for rule in rules),
        )
        .select_from(one)
        .outerjoin(RegionSettings.__table__, settings.region == region)
        .outerjoin(epoch, true())
    )
    if shape.with_insert:
        query = _with_insert(query, rules)
    prepared = _ORDER_CONTEXT[shape] = Precompiled(query)
    if reports:
        # A refusal's figures, read by a second statement only when its rule failed: what
        # every order does not need, it does not compute.
        _REPORTS[shape] = (
            select(*reports.values())
            .select_from(one)
            .outerjoin(RegionSettings.__table__, settings.region == region)
            .outerjoin(epoch, true())
        )
    return prepared


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What :func:`order_context` is asked about an order: the order as it would be stored
    (``region`` None: the user's own; ``limit_price_micros`` None: a market order, no band),
    the deployment's band for a region without settings, and the caller's session to check."""

    order: MarketOrder
    now: datetime
    default_band: tuple[int, int]
    epoch_minutes: int
    session_id: uuid.UUID | None = None


def inserts_with_checks(session: AsyncSession) -> bool:
    """Whether :func:`order_context` can insert an order with its checks (PostgreSQL: the
    epoch is taken ``FOR SHARE`` by the same statement; SQLite takes it with a write)."""
    return is_postgres(session)


async def order_context(
    session: AsyncSession,
    request: OrderRequest,
    *,
    available_account_id: uuid.UUID,
    take_auction_epoch: bool,
    insert: bool = False,
) -> OrderContext:
    """Every entry rule's verdict about ``request``, the region's settings and the epoch at
    the order's start, in one statement.

    With ``take_auction_epoch`` on PostgreSQL the epoch is also taken ``FOR SHARE`` and given an
    arrival seq when it is an auction epoch (as :func:`lock_epoch` would); a continuous epoch
    then reads as missing, and the caller takes it the usual way. Then, with ``insert``, the
    (limit) order is inserted by the same statement where every rule holds: ``inserted`` says
    whether it was, else the caller inserts it (or refuses it) as usual. A concurrent order with
    the same ``client_order_id`` makes the statement raise ``IntegrityError``."""
    order = request.order
    postgres = is_postgres(session)
    take = postgres and take_auction_epoch
    shape = _Shape(
        postgres,
        take,
        order.side,
        limit=order.limit_price_micros is not None,
        with_client_id=order.client_order_id is not None,
        caller=request.session_id is not None,
        region_from_user=order.region is None,
        with_insert=take and insert,
    )
    statement = _order_context_query(shape)
    params = _context_params(shape, request, available_account_id)
    connection = await session.connection()
    if postgres:  # compiled once: no cache key computed per order (see Precompiled)
        row = (await statement.execute(connection, params)).one()
    else:  # SQLite's datetimes need SQLAlchemy's result processing
        row = (await connection.execute(statement.statement, params)).one()
    context = _context_of(row, order.side, shape.with_insert)
    reports = _REPORTS.get(shape)
    if reports is not None and any(
        rule.reports is not None and not context.found.holds(rule) for rule in entry_rules.ALL
    ):
        figures = (await connection.execute(reports, params)).one()._mapping
        found = replace(context.found, reports={k: int(v or 0) for k, v in figures.items()})
        context = replace(context, found=found)
    return context


def _context_params(
    shape: _Shape, request: OrderRequest, available_account_id: uuid.UUID
) -> dict[str, Any]:
    order = request.order
    params: dict[str, Any] = {
        "region": order.region,
        "start": order.epoch_start,
        "user_id": order.user_id,
        "account_id": available_account_id,
        "now": request.now,
        "default_min": request.default_band[0],
        "default_max": request.default_band[1],
        "session_id": request.session_id,
    }
    for attr, column in _ORDER_COLUMNS if shape.with_insert else ():
        if column not in _FROM_CONTEXT:
            params[f"o_{column}"] = getattr(order, attr)
    params["o_limit_price_micros"] = order.limit_price_micros
    params["o_client_order_id"] = order.client_order_id
    params["o_id"] = order.id
    params["o_quantity_wh"] = order.quantity_wh
    params["epoch_minutes"] = request.epoch_minutes
    return params


def _context_of(row: Any, side: Side, with_insert: bool) -> OrderContext:
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
    mapping = row._mapping
    found = entry_rules.Found(
        verdicts={
            rule.verdict: bool(mapping[rule.verdict])
            for rule in entry_rules.ALL
            if rule.verdict in mapping
        },
        region=row.resolved_region,
        side=side,
        band_min_micros=int(row.band_min),
        band_max_micros=int(row.band_max),
        available_micros=int(row.balance or 0),
    )
    inserted = with_insert and int(row.inserted) == 1
    return OrderContext(
        found, settings, epoch, inserted=inserted, tariff_in_force=bool(row.tariff_in_force)
    )


async def delete_order(session: AsyncSession, order_id: uuid.UUID) -> None:
    """Take out an order the order-entry statement inserted (before anything refers to it)."""
    await session.execute(delete(MarketOrder).where(MarketOrder.id == order_id))


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


async def insert_trades(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(Trade), list(rows))


async def epoch_trade_values(session: AsyncSession, epoch_id: uuid.UUID) -> list[dict[str, Any]]:
    """The epoch's trades in execution order, as the clearing record needs them."""
    return [
        {
            "buy_order_id": t.buy_order_id,
            "sell_order_id": t.sell_order_id,
            "quantity_wh": t.quantity_wh,
            "price_micros": t.price_micros,
            "value_micros": t.value_micros,
        }
        for t in await epoch_trades(session, epoch_id)
    ]


async def order_counts_by_side(session: AsyncSession, epoch_id: uuid.UUID) -> dict[Side, int]:
    """How many of the epoch's orders were not cancelled, per side."""
    counts = await session.execute(
        select(MarketOrder.side, func.count())
        .where(MarketOrder.epoch_id == epoch_id, MarketOrder.status != OrderStatus.cancelled)
        .group_by(MarketOrder.side)
    )
    return {Side(side): int(n) for side, n in counts}


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
