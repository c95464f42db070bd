"""The queries of analytics: rollups (hourly energy, per-meter totals), settled trades and
positions, epochs and orders, ledger postings. Aggregation happens in SQL; a result has one row
per hour, day, epoch or group at most."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import User
from gridex.ledger.models import (
    AccountKind,
    Installation,
    InstallationShare,
    JournalEntry,
    Posting,
    account_id,
)
from gridex.market.models import Epoch, EpochState, MarketOrder, OrderStatus, Side, Trade
from gridex.market.models import SettlementPosition as Position
from gridex.meters.models import Granularity, Meter, MeterRollup

SETTLED = "settled"


def owner_meters(user_id: uuid.UUID) -> Select[Any]:
    """The meters a user owns now (deleted ones included: their history is still theirs)."""
    return select(Meter.id).where(Meter.owner_id == user_id)


def meters_in(ids: list[uuid.UUID]) -> Select[Any]:
    return select(Meter.id).where(Meter.id.in_(ids))


def region_meters(region: str) -> Select[Any]:
    return select(Meter.id).where(Meter.region == region)


async def hourly_energy(
    session: AsyncSession, meters: Select[Any], start: datetime, end: datetime
) -> list[tuple[datetime, int, int]]:
    """(hour, consumed_wh, produced_wh) summed over ``meters`` for the hours in [start, end)."""
    rows = await session.execute(
        select(
            MeterRollup.bucket_start,
            func.sum(MeterRollup.consumed_wh),
            func.sum(MeterRollup.produced_wh),
        )
        .where(
            MeterRollup.meter_id.in_(meters),
            MeterRollup.granularity == Granularity.h1,
            MeterRollup.bucket_start >= start,
            MeterRollup.bucket_start < end,
        )
        .group_by(MeterRollup.bucket_start)
        .order_by(MeterRollup.bucket_start)
    )
    return [(ts, int(c), int(p)) for ts, c, p in rows]


@dataclass(frozen=True, slots=True)
class TradeSide:
    """Settled trades of one side: energy (Wh), value and fees (micros), and the grid-only
    comparison: sum of Wh x the epoch's grid price (micros per kWh, so divide by 1000)."""

    wh: int
    value_micros: int
    fee_micros: int
    grid_value_milli: int
    trades: int


async def settled_trades(
    session: AsyncSession,
    *,
    side: Side,
    start: datetime,
    end: datetime,
    user_id: uuid.UUID | None = None,
    region: str | None = None,
    import_micros: int,
    feed_in_micros: int,
) -> TradeSide:
    """Settled trades of epochs starting in [start, end): a user's buys or sells, or a region's.

    The grid price of each trade is the one settlement fixed for its epoch (import for a buy,
    feed-in for a sell); ``import_micros``/``feed_in_micros`` stand in for an epoch without one.
    """
    price = (
        func.coalesce(Epoch.settlement_import_price_micros, import_micros)
        if side == Side.buy
        else func.coalesce(Epoch.settlement_feed_in_price_micros, feed_in_micros)
    )
    query = (
        select(
            func.coalesce(func.sum(Trade.quantity_wh), 0),
            func.coalesce(func.sum(Trade.value_micros), 0),
            func.coalesce(func.sum(Trade.fee_micros), 0),
            func.coalesce(func.sum(Trade.quantity_wh * price), 0),
            func.count(),
        )
        .join(Epoch, Epoch.id == Trade.epoch_id)
        .where(
            Trade.settlement_status == SETTLED,
            Trade.epoch_start >= start,
            Trade.epoch_start < end,
        )
    )
    if user_id is not None:
        query = query.where((Trade.buyer_id if side == Side.buy else Trade.seller_id) == user_id)
    if region is not None:
        query = query.where(Trade.region == region)
    wh, value, fee, grid, count = (await session.execute(query)).one()
    return TradeSide(int(wh), int(value), int(fee), int(grid), int(count))


async def settled_positions(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    user_id: uuid.UUID | None = None,
    region: str | None = None,
) -> list[tuple[datetime, Position]]:
    """Settlement positions of epochs starting in [start, end), with the epoch's start."""
    query = (
        select(Epoch.start, Position)
        .join(Epoch, Epoch.id == Position.epoch_id)
        .where(Epoch.start >= start, Epoch.start < end)
        .order_by(Epoch.start)
    )
    if user_id is not None:
        query = query.where(Position.user_id == user_id)
    if region is not None:
        query = query.where(Epoch.region == region)
    return [(at, position) for at, position in await session.execute(query)]


async def local_energy(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    user_id: uuid.UUID | None = None,
    region: str | None = None,
) -> tuple[int, int]:
    """(bought_wh, sold_wh) in settled positions of epochs starting in [start, end)."""
    query = (
        select(
            func.coalesce(func.sum(Position.bought_wh), 0),
            func.coalesce(func.sum(Position.sold_wh), 0),
        )
        .join(Epoch, Epoch.id == Position.epoch_id)
        .where(Epoch.start >= start, Epoch.start < end)
    )
    if user_id is not None:
        query = query.where(Position.user_id == user_id)
    if region is not None:
        query = query.where(Epoch.region == region)
    bought, sold = (await session.execute(query)).one()
    return int(bought), int(sold)


CLEARED_STATES = (EpochState.cleared, EpochState.delivered, EpochState.settled)


async def region_epochs(
    session: AsyncSession, region: str, start: datetime, end: datetime
) -> list[Epoch]:
    """The region's epochs starting in [start, end) whose gate has closed (past trading)."""
    rows = await session.scalars(
        select(Epoch)
        .where(
            Epoch.region == region,
            Epoch.start >= start,
            Epoch.start < end,
            Epoch.state != EpochState.open,
        )
        .order_by(Epoch.start)
    )
    return list(rows)


async def best_prices(
    session: AsyncSession, region: str, start: datetime, end: datetime
) -> dict[uuid.UUID, tuple[int | None, int | None, int]]:
    """Per epoch: (best bid, best ask, orders) over the orders that were in its book."""
    in_book = MarketOrder.status.notin_((OrderStatus.cancelled, OrderStatus.rejected))
    rows = await session.execute(
        select(
            MarketOrder.epoch_id,
            func.max(case((MarketOrder.side == Side.buy, MarketOrder.effective_price_micros))),
            func.min(case((MarketOrder.side == Side.sell, MarketOrder.effective_price_micros))),
            func.count(),
        )
        .where(
            MarketOrder.epoch_id.in_(
                select(Epoch.id).where(
                    Epoch.region == region, Epoch.start >= start, Epoch.start < end
                )
            ),
            in_book,
        )
        .group_by(MarketOrder.epoch_id)
    )
    return {
        epoch: (
            None if bid is None else int(bid),
            None if ask is None else int(ask),
            int(count),
        )
        for epoch, bid, ask, count in rows
    }


async def meters_by_id(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Meter]:
    if not ids:
        return {}
    return {m.id: m for m in await session.scalars(select(Meter).where(Meter.id.in_(ids)))}


async def holdings(
    session: AsyncSession, user_id: uuid.UUID
) -> list[tuple[Installation, int, Meter]]:
    """The installations ``user_id`` holds a share of: (installation, share bp, meter)."""
    rows = await session.execute(
        select(Installation, InstallationShare.share_bp, Meter)
        .join(InstallationShare, InstallationShare.installation_id == Installation.id)
        .join(Meter, Meter.id == Installation.meter_id)
        .where(InstallationShare.user_id == user_id)
        .order_by(Meter.serial)
    )
    return [(i, int(bp), m) for i, bp, m in rows]


async def postings_of_type(
    session: AsyncSession,
    account: uuid.UUID,
    entry_types: tuple[str, ...],
    start: datetime,
    end: datetime,
) -> list[tuple[datetime, int]]:
    """(created_at, amount) of postings on ``account`` in [start, end) of entries of a type."""
    rows = await session.execute(
        select(Posting.created_at, Posting.amount_micros)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            Posting.account_id == account,
            JournalEntry.type.in_(entry_types),
            Posting.created_at >= start,
            Posting.created_at < end,
        )
        .order_by(Posting.created_at)
    )
    return [(at, int(amount)) for at, amount in rows]


async def shares_from_others(
    session: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime
) -> list[tuple[datetime, int]]:
    """Revenue shares ``user_id`` received in [start, end) from trades sold by someone else
    (a seller's share of its own sale is already in its settlement position)."""
    rows = await session.execute(
        select(Posting.created_at, Posting.amount_micros, JournalEntry.reference_id)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            Posting.account_id == account_id(AccountKind.available, user_id),
            JournalEntry.type == "revenue_share",
            Posting.created_at >= start,
            Posting.created_at < end,
        )
    )
    found = [(at, int(amount), uuid.UUID(ref)) for at, amount, ref in rows if ref]
    own = (
        set(
            await session.scalars(
                select(Trade.id).where(
                    Trade.id.in_({ref for _, _, ref in found}), Trade.seller_id == user_id
                )
            )
        )
        if found
        else set()
    )
    return [(at, amount) for at, amount, ref in found if ref not in own]


async def account_movements(
    session: AsyncSession, kind: AccountKind, start: datetime, end: datetime
) -> dict[str, int]:
    """Per entry type, the sum of the postings on the platform account ``kind`` in [start, end)."""
    rows = await session.execute(
        select(JournalEntry.type, func.sum(Posting.amount_micros))
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            Posting.account_id == account_id(kind),
            Posting.created_at >= start,
            Posting.created_at < end,
        )
        .group_by(JournalEntry.type)
    )
    return {str(t): int(amount) for t, amount in rows}


async def users_by(session: AsyncSession, column: Any) -> dict[str, int]:
    rows = await session.execute(
        select(column, func.count()).where(User.deleted_at.is_(None)).group_by(column)
    )
    return {str(getattr(key, "value", key)): int(n) for key, n in rows}


async def users_active(session: AsyncSession, start: datetime, end: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count()).where(
                User.deleted_at.is_(None), User.last_login_at >= start, User.last_login_at < end
            )
        )
        or 0
    )


async def users_created(session: AsyncSession, start: datetime, end: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count()).where(User.created_at >= start, User.created_at < end)
        )
        or 0
    )
