"""``delivered -> settled``: the settlement of one epoch in one transaction, and the job that
runs it for every delivered epoch."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.jobs import run_each
from gridex.core.runtime import Runtime
from gridex.core.units import wh_to_kwh
from gridex.ledger import service as ledger
from gridex.ledger.models import EntryType
from gridex.market import repository
from gridex.market.models import Epoch, EpochState, SettlementPosition, Trade
from gridex.market.prices import GridPrices, grid_prices
from gridex.market.settlement.events import emit_settlement, record_settlement
from gridex.market.settlement.metering import energy_in_epoch
from gridex.market.settlement.money import grid_entry, revenue_shares, trade_entries
from gridex.market.settlement.rules import MeteredEnergy, Payout, delivery_check, plan_payout

_BATCH = 100


@dataclass(slots=True)
class _Totals:
    paid: int = 0
    fees: int = 0
    shared: int = 0
    charges: int = 0
    credits: int = 0


@dataclass(slots=True)
class _Ledger:
    """What settlement has done so far in one epoch: the record's totals and, per user, what
    it received (as seller or share holder) and the fees of its sales."""

    totals: _Totals = field(default_factory=_Totals)
    entries: list[ledger.NewEntry] = field(default_factory=list)
    received: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))
    fees: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))


async def _claim(session: AsyncSession, epoch_id: uuid.UUID, now: datetime) -> Epoch | None:
    """``delivered -> settled`` by a conditional update: only one worker's claim matches."""
    claimed = await session.execute(
        update(Epoch)
        .where(Epoch.id == epoch_id, Epoch.state == EpochState.delivered)
        .values(state=EpochState.settled, settled_at=now)
        .execution_options(synchronize_session=False)
    )
    if int(claimed.rowcount or 0) != 1:  # type: ignore[attr-defined]
        return None
    return await session.get(Epoch, epoch_id, populate_existing=True)


async def _payouts(
    session: AsyncSession, trades: list[Trade], energy: dict[uuid.UUID, MeteredEnergy]
) -> list[Payout]:
    """Each trade's payout, its seller's revenue attributed to its metered meters."""
    exports = {
        t.seller_id: energy.get(t.seller_id, MeteredEnergy()).exported_by_meter for t in trades
    }
    shares = await revenue_shares(session, (m for by_meter in exports.values() for m in by_meter))
    return [
        plan_payout(
            value_micros=t.value_micros,
            fee_micros=t.fee_micros,
            exported_by_meter=exports[t.seller_id],
            shares={m: shares[m] for m in exports[t.seller_id] if m in shares},
        )
        for t in trades
    ]


def _pay(epoch: Epoch, trades: list[Trade], payouts: list[Payout], books: _Ledger) -> None:
    for trade, payout in zip(trades, payouts, strict=True):
        books.entries += trade_entries(epoch, trade, payout)
        books.totals.paid += trade.value_micros - trade.fee_micros
        books.totals.fees += trade.fee_micros
        books.totals.shared += payout.shared_micros
        books.received[trade.seller_id] += payout.seller_micros
        books.fees[trade.seller_id] += trade.fee_micros
        for holder, amount in payout.holders.items():
            books.received[holder] += amount


def _check_delivery(
    epoch: Epoch,
    user: uuid.UUID,
    traded: tuple[int, int],
    metered: MeteredEnergy,
    prices: GridPrices,
    books: _Ledger,
    now: datetime,
) -> SettlementPosition:
    """One participant's delivery check (``traded``: Wh sold, Wh bought), its charge or
    credit against ``grid``, and its stored position."""
    sold, bought = traded
    check = delivery_check(
        sold_wh=sold,
        bought_wh=bought,
        exported_wh=metered.exported_wh,
        imported_wh=metered.imported_wh,
        import_price_micros=prices.import_price_micros,
        feed_in_price_micros=prices.feed_in_price_micros,
    )
    start = utc_iso(epoch.start)
    books.entries += grid_entry(
        epoch,
        user,
        -check.charge_micros,
        type=EntryType.settlement_charge,
        description=(
            f"Delivery shortfall of {wh_to_kwh(check.shortfall_wh)} kWh in epoch {start} at "
            "the grid import price"
        ),
    )
    books.entries += grid_entry(
        epoch,
        user,
        check.credit_micros,
        type=EntryType.settlement_credit,
        description=(
            f"Unconsumed {wh_to_kwh(check.excess_wh)} kWh bought in epoch {start}, credited at "
            "the feed-in price"
        ),
    )
    books.totals.charges += check.charge_micros
    books.totals.credits += check.credit_micros
    return SettlementPosition(
        epoch_id=epoch.id,
        user_id=user,
        sold_wh=sold,
        bought_wh=bought,
        exported_wh=metered.exported_wh,
        imported_wh=metered.imported_wh,
        received_micros=books.received.get(user, 0),
        fees_micros=books.fees.get(user, 0),
        charged_micros=check.charge_micros,
        credited_micros=check.credit_micros,
        updated_at=now,
    )


def _record(epoch: Epoch, totals: _Totals, prices: GridPrices) -> None:
    epoch.settlement_paid_micros = totals.paid
    epoch.settlement_fees_micros = totals.fees
    epoch.settlement_shared_micros = totals.shared
    epoch.settlement_charges_micros = totals.charges
    epoch.settlement_credits_micros = totals.credits
    epoch.settlement_import_price_micros = prices.import_price_micros
    epoch.settlement_feed_in_price_micros = prices.feed_in_price_micros
    epoch.settlement_adjustments = 0


async def settle_epoch(session: AsyncSession, rt: Runtime, epoch_id: uuid.UUID) -> bool:
    """Settle one delivered epoch in the caller's transaction; False (nothing written) when it
    is not delivered or another worker has settled it already."""
    now = rt.clock.now()
    started = time.perf_counter()
    epoch = await _claim(session, epoch_id, now)
    if epoch is None:
        return False
    trades = await repository.epoch_trades(session, epoch.id)
    prices = await grid_prices(session, rt, epoch.region, epoch.start)
    sold: dict[uuid.UUID, int] = defaultdict(int)
    bought: dict[uuid.UUID, int] = defaultdict(int)
    for trade in trades:
        sold[trade.seller_id] += trade.quantity_wh
        bought[trade.buyer_id] += trade.quantity_wh
    users = sorted(set(sold) | set(bought))
    energy = await energy_in_epoch(session, epoch, users)
    payouts = await _payouts(session, trades, energy)

    books = _Ledger()
    _pay(epoch, trades, payouts, books)
    positions = [
        _check_delivery(
            epoch,
            user,
            (sold[user], bought[user]),
            energy.get(user, MeteredEnergy()),
            prices,
            books,
            now,
        )
        for user in users
    ]
    # The epoch's money moves in one batch: payouts first (escrow holds every trade's value),
    # then the charges, which alone may leave a seller in debt.
    if books.entries:
        await ledger.post_entries(session, books.entries, at=now)
    session.add_all(positions)
    await session.execute(
        update(Trade)
        .where(Trade.epoch_id == epoch.id)
        .values(settlement_status="settled")
        .execution_options(synchronize_session=False)
    )
    _record(epoch, books.totals, prices)
    await session.flush()
    emit_settlement(session, rt, epoch, positions, now, adjustment=False)
    record_settlement(session, epoch, positions, started, adjustment=False)
    return True


async def settle_due(rt: Runtime) -> int:
    """The settlement job: settle every delivered epoch, each in its own transaction."""

    async def due(session: AsyncSession) -> list[uuid.UUID]:
        return list(
            await session.scalars(
                select(Epoch.id)
                .where(Epoch.state == EpochState.delivered)
                .order_by(Epoch.start)
                .limit(_BATCH)
            )
        )

    async def settle(session: AsyncSession, epoch_id: uuid.UUID) -> bool:
        return await settle_epoch(session, rt, epoch_id)

    return await run_each(rt.db, "market_settlement", due, settle)
