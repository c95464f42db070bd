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
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

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


# --- ledger accounts ----------------------------------------------------------------------------


async def lock_accounts(session: AsyncSession, ids: Iterable[uuid.UUID]) -> None:
    """Lock ledger account rows in one global order (by id) before moving money for several
    users in one transaction, so that it cannot deadlock with another such transaction or
    with an order's reservation (the ledger locks each entry's accounts in the same order)."""
    wanted = sorted(set(ids), key=lambda i: i.bytes)
    if not wanted or not _is_postgres(session):
        return
    await session.execute(
        select(LedgerAccount.id)
        .where(LedgerAccount.id.in_(wanted))
        .order_by(LedgerAccount.id)
        .with_for_update()
    )
