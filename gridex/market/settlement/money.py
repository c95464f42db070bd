"""Settlement's ledger entries: payouts out of escrow, revenue shares, and movements
against ``grid``. They are built here as plain entries and posted by the caller with one
``ledger.post_entries`` call per epoch (all or nothing, accounts locked in id order)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.ledger import service as ledger
from gridex.ledger.installations import shares_of_meter
from gridex.ledger.models import EntryType, ReferenceType
from gridex.market.models import Epoch, Trade
from gridex.market.settlement.rules import Payout, Shares


def epoch_reference(epoch: Epoch) -> ledger.Reference:
    return ledger.Reference(ReferenceType.epoch, epoch.id)


def _legs(amounts: Iterable[tuple[ledger.AccountRef, int, uuid.UUID | None]]) -> list[ledger.Leg]:
    """Legs merged per account, zero amounts left out (the ledger refuses them). The third
    item tags a platform account's posting with the user it concerns."""
    merged: dict[ledger.AccountRef, int] = defaultdict(int)
    tags: dict[ledger.AccountRef, uuid.UUID | None] = {}
    for account, amount, tag in amounts:
        merged[account] += amount
        tags.setdefault(account, None if account.user_id is not None else tag)
    return [
        ledger.Leg(account, amount, tags[account]) for account, amount in merged.items() if amount
    ]


def _entry(
    type: EntryType, legs: list[ledger.Leg], description: str, reference: ledger.Reference
) -> list[ledger.NewEntry]:
    return [ledger.NewEntry(type, legs, description, reference)] if len(legs) >= 2 else []


def trade_entries(epoch: Epoch, trade: Trade, payout: Payout) -> list[ledger.NewEntry]:
    """Escrow -> seller and ``fees`` (``settlement_payout``), and escrow -> share holders and
    ``fees`` (``revenue_share``). The escrow legs are tagged with the buyer, whose
    ``escrow_pending`` they empty; the fee legs with the seller, whose revenue they come from."""
    reference = ledger.Reference(ReferenceType.trade, trade.id)
    start = utc_iso(epoch.start)
    own = trade.value_micros - payout.shared_micros
    entries = _entry(
        EntryType.settlement_payout,
        _legs(
            [
                (ledger.ESCROW, -own, trade.buyer_id),
                (ledger.FEES, payout.fee_micros, trade.seller_id),
                (ledger.user_account(trade.seller_id), payout.seller_micros, None),
            ]
        ),
        f"Settlement of trade {trade.id} (epoch {start})",
        reference,
    )
    if payout.shared_micros:
        entries += _entry(
            EntryType.revenue_share,
            _legs(
                [
                    (ledger.ESCROW, -payout.shared_micros, trade.buyer_id),
                    (ledger.FEES, payout.platform_share_micros, trade.seller_id),
                    *((ledger.user_account(u), a, None) for u, a in sorted(payout.holders.items())),
                ]
            ),
            f"Revenue shares of trade {trade.id} (epoch {start})",
            reference,
        )
    return entries


def grid_entry(
    epoch: Epoch,
    user_id: uuid.UUID,
    amount_micros: int,
    *,
    type: EntryType,
    description: str,
) -> list[ledger.NewEntry]:
    """``amount > 0``: ``grid`` pays the user; ``< 0``: the user pays ``grid`` (may become a
    debt: the only debit settlement makes from ``available``); 0: nothing."""
    if not amount_micros:
        return []
    user = ledger.user_account(user_id)
    source, destination = (ledger.GRID, user) if amount_micros > 0 else (user, ledger.GRID)
    transfer = ledger.Transfer(
        source,
        destination,
        abs(amount_micros),
        type,
        description,
        epoch_reference(epoch),
        allow_debt=amount_micros < 0,
    )
    return [transfer.entry()]


async def revenue_shares(
    session: AsyncSession, meters: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Shares]:
    out: dict[uuid.UUID, Shares] = {}
    for meter in sorted(set(meters)):
        found = await shares_of_meter(session, meter)
        if found is not None:
            out[meter] = found
    return out
