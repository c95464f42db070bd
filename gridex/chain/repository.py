"""Queries of the chain mirror: the journal past the mirror's cursor, the outbox, wallets."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.chain.models import (
    ChainHolder,
    ChainRecord,
    ChainTradeEnergy,
    ChainTransaction,
    ChainWallet,
    MirroredEntry,
    OutboxStatus,
)
from gridex.core.db import conflict_insert, insert_or_ignore
from gridex.ledger.models import JournalEntry, LedgerAccount, Posting
from gridex.market.models import Epoch, SettlementPosition, Trade


async def records(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(select(ChainRecord.name, ChainRecord.value))
    return {name: value for name, value in rows}


async def unmirrored_entries(
    session: AsyncSession, window: timedelta, limit: int
) -> list[JournalEntry]:
    """Entries the mirror has not handled, oldest first, from ``window`` before the newest
    one it has handled (the look-back that catches entries committed late)."""
    newest = await session.scalar(select(func.max(MirroredEntry.entry_created_at)))
    query = select(JournalEntry).where(~exists().where(MirroredEntry.entry_id == JournalEntry.id))
    if newest is not None:
        query = query.where(JournalEntry.created_at >= newest - window)
    query = query.order_by(JournalEntry.created_at, JournalEntry.id).limit(limit)
    return list(await session.scalars(query))


class EntryPosting(NamedTuple):
    amount_micros: int
    kind: str
    # The account's owner (a user's account), or None (a platform account).
    owner: uuid.UUID | None
    # For a platform account, the user on whose behalf it moved (the buyer, for escrow).
    on_behalf_of: uuid.UUID | None


async def postings_by_entry(
    session: AsyncSession, entry_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[EntryPosting]]:
    rows = await session.execute(
        select(
            Posting.entry_id,
            Posting.amount_micros,
            LedgerAccount.kind,
            LedgerAccount.user_id,
            Posting.user_id,
        )
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(Posting.entry_id.in_(entry_ids))
    )
    out: dict[uuid.UUID, list[EntryPosting]] = defaultdict(list)
    for entry_id, amount, kind, owner, tag in rows:
        out[entry_id].append(EntryPosting(int(amount), kind, owner, tag))
    return out


class TradeParties(NamedTuple):
    epoch_id: uuid.UUID
    seller_id: uuid.UUID
    buyer_id: uuid.UUID


async def trades(
    session: AsyncSession, trade_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, TradeParties]:
    ids = list(set(trade_ids))
    if not ids:
        return {}
    rows = await session.execute(
        select(Trade.id, Trade.epoch_id, Trade.seller_id, Trade.buyer_id).where(Trade.id.in_(ids))
    )
    return {t: TradeParties(e, s, b) for t, e, s, b in rows}


async def epochs(session: AsyncSession, epoch_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Epoch]:
    ids = list(set(epoch_ids))
    if not ids:
        return {}
    return {e.id: e for e in await session.scalars(select(Epoch).where(Epoch.id.in_(ids)))}


class EpochTrade(NamedTuple):
    id: uuid.UUID
    seller_id: uuid.UUID
    buyer_id: uuid.UUID
    seq: int
    quantity_wh: int


async def epoch_delivery(
    session: AsyncSession, epoch_id: uuid.UUID
) -> tuple[list[EpochTrade], dict[uuid.UUID, int]]:
    """The epoch's trades and each seller's delivered Wh (``min(sold, exported)`` of its
    settlement position)."""
    rows = await session.execute(
        select(Trade.id, Trade.seller_id, Trade.buyer_id, Trade.seq, Trade.quantity_wh).where(
            Trade.epoch_id == epoch_id
        )
    )
    epoch_trades = [EpochTrade(t, s, b, int(seq), int(q)) for t, s, b, seq, q in rows]
    positions = await session.execute(
        select(
            SettlementPosition.user_id, SettlementPosition.sold_wh, SettlementPosition.exported_wh
        ).where(SettlementPosition.epoch_id == epoch_id, SettlementPosition.sold_wh > 0)
    )
    delivered = {user: min(int(sold), int(exported)) for user, sold, exported in positions}
    return epoch_trades, delivered


async def trade_energy(
    session: AsyncSession, trade_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """The Wh the mirror has delivered on chain per trade (trades it has not: absent)."""
    ids = list(set(trade_ids))
    if not ids:
        return {}
    rows = await session.execute(
        select(ChainTradeEnergy.trade_id, ChainTradeEnergy.wh).where(
            ChainTradeEnergy.trade_id.in_(ids)
        )
    )
    return {t: int(wh) for t, wh in rows}


async def save_trade_energy(session: AsyncSession, values: dict[uuid.UUID, int]) -> None:
    if not values:
        return
    statement = conflict_insert(session, ChainTradeEnergy)
    statement = statement.on_conflict_do_update(
        index_elements=["trade_id"], set_={"wh": statement.excluded.wh}
    )
    await session.execute(statement, [{"trade_id": t, "wh": wh} for t, wh in values.items()])


async def holders(session: AsyncSession, names: Iterable[str]) -> dict[str, ChainHolder]:
    keys = list(set(names))
    if not keys:
        return {}
    rows = await session.scalars(select(ChainHolder).where(ChainHolder.holder.in_(keys)))
    return {h.holder: h for h in rows}


async def save_holders(session: AsyncSession, values: dict[str, tuple[int, int]]) -> None:
    """Upsert (mirrored ledger micros, energy Wh) per holder."""
    if not values:
        return
    statement = conflict_insert(session, ChainHolder)
    statement = statement.on_conflict_do_update(
        index_elements=["holder"],
        set_={
            "ledger_micros": statement.excluded.ledger_micros,
            "energy_wh": statement.excluded.energy_wh,
        },
    )
    await session.execute(
        statement,
        [
            {"holder": h, "ledger_micros": micros, "energy_wh": wh}
            for h, (micros, wh) in values.items()
        ],
    )


async def mark_mirrored(session: AsyncSession, entries: list[JournalEntry]) -> None:
    if entries:
        await session.execute(
            insert_or_ignore(session, MirroredEntry),
            [{"entry_id": e.id, "entry_created_at": e.created_at} for e in entries],
        )


async def prune_mirrored(session: AsyncSession, window: timedelta) -> None:
    """Forget handled entries older than the look-back window (they are never re-read)."""
    newest = await session.scalar(select(func.max(MirroredEntry.entry_created_at)))
    if newest is not None:
        await session.execute(
            MirroredEntry.__table__.delete().where(  # type: ignore[attr-defined]
                MirroredEntry.entry_created_at < newest - 2 * window
            )
        )


async def wallets(
    session: AsyncSession, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, ChainWallet]:
    ids = list(set(user_ids))
    if not ids:
        return {}
    rows = await session.scalars(select(ChainWallet).where(ChainWallet.user_id.in_(ids)))
    return {w.user_id: w for w in rows}


class Due(NamedTuple):
    """An outbox row as the sender needs it."""

    id: int
    status: str
    signature: str | None
    signed: bytes | None
    last_valid_height: int | None
    instructions: bytes
    signers: str
    epoch_id: uuid.UUID | None
    memo: str | None
    next_attempt_at: datetime
    lane: int | None


async def wallets_to_reseal(session: AsyncSession, key_id: str) -> list[ChainWallet]:
    """Wallets sealed under another key than ``key_id`` (the current one)."""
    return list(await session.scalars(select(ChainWallet).where(ChainWallet.key_id != key_id)))


async def due_transactions(session: AsyncSession, now: datetime, limit: int) -> list[Due]:
    """The next transactions to send, in outbox order. The first one not due yet stops the
    list: later ones may depend on it (a transfer out of what it mints)."""
    t = ChainTransaction
    rows = await session.execute(
        select(
            t.id,
            t.status,
            t.signature,
            t.signed,
            t.last_valid_height,
            t.instructions,
            t.signers,
            t.epoch_id,
            t.memo,
            t.next_attempt_at,
            t.lane,
        )
        .where(t.status.in_([OutboxStatus.pending.value, OutboxStatus.submitted.value]))
        .order_by(t.id)
        .limit(limit)
    )
    due = []
    for row in rows:
        found = Due._make(row)
        if found.next_attempt_at > now:
            break
        due.append(found)
    return due


async def outbox_depth(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(ChainTransaction)
            .where(
                ChainTransaction.status.in_(
                    [OutboxStatus.pending.value, OutboxStatus.submitted.value]
                )
            )
        )
        or 0
    )
