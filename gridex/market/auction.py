"""Clearing at gate closure: the uniform-price auction of an auction epoch, or the clearing
record of a continuous one, written to the database and the ledger; and the job that clears
every epoch past gate closure."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.jobs import run_each
from gridex.core.metrics import CLEARING_SECONDS, after_commit
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, round_half_even, wh_to_kwh
from gridex.market import repository
from gridex.market.engine import Trade as EngineTrade
from gridex.market.engine import clear_auction_arrays, trades_hash
from gridex.market.fills import (
    buys_in_lock_order,
    emit_order_updates,
    emit_trades,
    fill,
    move_money,
    trade_row,
)
from gridex.market.models import Epoch, MarketOrder, Mechanism, OrderStatus, Side
from gridex.market.regions import market_params
from gridex.market.views import epoch_event

log = structlog.get_logger(__name__)


def _final_status(order: MarketOrder) -> OrderStatus:
    if order.filled_wh >= order.quantity_wh:
        return OrderStatus.filled
    return OrderStatus.partially_filled if order.filled_wh else OrderStatus.expired


async def clear_epoch(session: AsyncSession, rt: Runtime, epoch_id: uuid.UUID) -> bool:
    """Clear one epoch in the caller's transaction; False (and nothing written) when it is not
    due or another worker has cleared it already.

    Auction: the uniform-price auction over the epoch's open orders writes the trades, fills,
    final statuses and money. Continuous: the trades exist already; the resting rest expires.
    Either way the epoch gets its clearing record with the trades hash and ``epoch_cleared``
    is published after commit.
    """
    now = rt.clock.now()
    started = time.perf_counter()
    if not await repository.claim_epoch(session, epoch_id, now):
        return False
    epoch = await repository.epoch_by_id(session, epoch_id)
    orders = await repository.resting_orders(session, epoch.id)
    if epoch.mechanism is Mechanism.auction:
        fee_bps = (await market_params(session, rt, epoch.region)).fee_bps
        rows = await _auction(session, epoch, orders, fee_bps, now)
        trades = rows
        buy_orders = sum(1 for o in orders if o.side is Side.buy)
        epoch.buy_orders, epoch.sell_orders = buy_orders, len(orders) - buy_orders
    else:
        rows = []
        trades = await repository.epoch_trade_values(session, epoch.id)
        counts = await repository.order_counts_by_side(session, epoch.id)
        epoch.buy_orders, epoch.sell_orders = counts.get(Side.buy, 0), counts.get(Side.sell, 0)
    await _close_orders(session, orders, rows, now)
    _record(epoch, trades, now)
    await session.flush()
    after_commit(session, partial(_log_clearing, _clearing_fields(epoch), started))

    emit_trades(session, rt, epoch, rows)
    emit_order_updates(session, rt, orders, now)
    emit(
        session,
        rt.pubsub,
        ("market", f"epoch:{utc_iso(epoch.start)}"),
        "epoch_cleared",
        epoch_event(epoch, now),
        now,
    )
    return True


def _clearing_fields(epoch: Epoch) -> dict[str, Any]:
    return {
        "epoch": utc_iso(epoch.start),
        "region": epoch.region,
        "mechanism": epoch.mechanism.value,
        "price": micros_to_money(epoch.price_micros) if epoch.price_micros is not None else None,
        "volume_kwh": wh_to_kwh(epoch.volume_wh or 0),
        "trades": epoch.trade_count,
        "buy_orders": epoch.buy_orders,
        "sell_orders": epoch.sell_orders,
    }


def _log_clearing(fields: dict[str, Any], started: float) -> None:
    """One line per committed clearing; its time runs from the claim to the commit."""
    seconds = time.perf_counter() - started
    CLEARING_SECONDS.labels(fields["mechanism"]).observe(seconds)
    log.info("epoch_cleared", **fields, ms=round(seconds * 1000, 1))


async def _close_orders(
    session: AsyncSession,
    orders: list[MarketOrder],
    rows: list[dict[str, Any]],
    now: datetime,
) -> None:
    """Whatever still rests is final now: expire the rest and give back what buys still hold
    (after capturing into escrow what the auction's ``rows`` filled)."""
    captured: dict[uuid.UUID, int] = defaultdict(int)
    for row in rows:
        captured[row["buy_order_id"]] += row["value_micros"]
    for order in orders:
        order.status = _final_status(order)
        order.updated_at = now
    buys = buys_in_lock_order(orders)
    await move_money(session, ((o, captured.get(o.id, 0), True) for o in buys), now)


def _record(epoch: Epoch, trades: Sequence[dict[str, Any]], now: datetime) -> None:
    """The epoch's clearing record: volume, trade count, price (auction: the clearing price;
    continuous: the volume-weighted average, half-even) and the hash of its trades."""
    volume = sum(t["quantity_wh"] for t in trades)
    value = sum(t["value_micros"] for t in trades)
    epoch.volume_wh = volume
    epoch.trade_count = len(trades)
    if epoch.mechanism is Mechanism.auction:
        epoch.price_micros = trades[0]["price_micros"] if trades else None
    else:
        epoch.price_micros = round_half_even(value * 1000, volume) if volume else None
    epoch.trades_hash = trades_hash(
        (
            EngineTrade(
                str(t["buy_order_id"]), str(t["sell_order_id"]), t["quantity_wh"], t["price_micros"]
            )
            for t in trades
        ),
        utc_iso(epoch.start),
    )
    epoch.cleared_at = now


async def _auction(
    session: AsyncSession,
    epoch: Epoch,
    orders: list[MarketOrder],
    fee_bps: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Run the uniform-price auction; write trades and fills. Returns the trade rows in
    canonical order."""
    bids = [o for o in orders if o.side is Side.buy]
    asks = [o for o in orders if o.side is Side.sell]

    def column(side: list[MarketOrder], name: str) -> Any:
        if name == "quantity":
            return np.fromiter((o.quantity_wh - o.filled_wh for o in side), np.int64, len(side))
        attr = "effective_price_micros" if name == "price" else "seq"
        return np.fromiter((getattr(o, attr) for o in side), np.int64, len(side))

    result = clear_auction_arrays(
        bid_price=column(bids, "price"),
        bid_quantity=column(bids, "quantity"),
        bid_seq=column(bids, "seq"),
        ask_price=column(asks, "price"),
        ask_quantity=column(asks, "quantity"),
        ask_seq=column(asks, "seq"),
        bid_ids=[str(o.id) for o in bids],
        ask_ids=[str(o.id) for o in asks],
    )
    if result.price_micros is None:
        return []
    price = result.price_micros
    rows = []
    for seq, (b, a, quantity) in enumerate(
        zip(
            result.trade_bid.tolist(),
            result.trade_ask.tolist(),
            result.trade_quantity.tolist(),
            strict=True,
        )
    ):
        buy, sell = bids[b], asks[a]
        row = trade_row(epoch, seq, buy, sell, quantity, price, fee_bps, now)
        rows.append(row)
        fill(buy, quantity, row["value_micros"], now)
        fill(sell, quantity, row["value_micros"], now)
    await repository.insert_trades(session, rows)
    return rows


async def clear_due(rt: Runtime) -> int:
    """The clearing job: clear every epoch past gate closure, each in its own transaction.

    Safe from several workers at once: the claim is a conditional update of the epoch's state,
    so a second worker's claim matches no row and writes nothing.
    """
    now = rt.clock.now()

    async def due(session: AsyncSession) -> list[uuid.UUID]:
        await repository.close_due_epochs(session, now)
        return await repository.due_epochs(session, now)

    async def clear(session: AsyncSession, epoch_id: uuid.UUID) -> bool:
        return await clear_epoch(session, rt, epoch_id)

    return await run_each(rt.db, "market_clearing", due, clear)
