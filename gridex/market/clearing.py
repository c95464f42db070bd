"""Clearing and continuous matching: the engine's results written to the database and the ledger.

Money, per buy order (sells hold nothing): a fill's value goes from the buyer's ``reserved`` to
``escrow`` (tagged with the buyer); once the order can fill no more (filled, expired, cancelled)
whatever it still holds goes back to ``available``. A buy holds ``value(unfilled rest, limit)``;
as each trade's value is rounded on its own, a buy split into several trades can owe a few micros
more than it holds: those come from the buyer's ``available`` in the same entry (see
docs/market.md, "Money").
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, round_half_even, wh_to_kwh
from gridex.ledger import service as ledger
from gridex.ledger.models import AccountKind, EntryType, ReferenceType
from gridex.market import repository
from gridex.market.engine import (
    ContinuousBook,
    clear_auction_arrays,
    fee_micros,
    trade_value_micros,
    trades_hash,
)
from gridex.market.engine import Order as EngineOrder
from gridex.market.engine import Side as EngineSide
from gridex.market.engine import Trade as EngineTrade
from gridex.market.models import (
    Epoch,
    MarketOrder,
    Mechanism,
    OrderStatus,
    RegionSettings,
    Side,
    Trade,
)


def _engine_order(order: MarketOrder) -> EngineOrder:
    side = EngineSide.BUY if order.side is Side.buy else EngineSide.SELL
    return EngineOrder(
        str(order.id),
        side,
        order.quantity_wh - order.filled_wh,
        order.effective_price_micros,
        order.seq,
    )


def _final_status(order: MarketOrder) -> OrderStatus:
    if order.filled_wh >= order.quantity_wh:
        return OrderStatus.filled
    return OrderStatus.partially_filled if order.filled_wh else OrderStatus.expired


def _settle_buy(order: MarketOrder, captured: int, *, done: bool) -> list[ledger.NewEntry]:
    """The entries that move ``captured`` micros of new fills into escrow and give back what is
    no longer needed (everything still held once ``done``); updates what the order holds."""
    reference = ledger.Reference(ReferenceType.order, order.id)
    entries = []
    held = order.reserved_micros
    if captured > 0:
        from_reserved = min(held, captured)
        shortfall = captured - from_reserved
        legs = [ledger.Leg(ledger.ESCROW, captured, order.user_id)]
        if from_reserved:
            legs.append(
                ledger.Leg(ledger.user_account(order.user_id, AccountKind.reserved), -from_reserved)
            )
        if shortfall:
            # Only a rounding remainder of a few micros can touch `available` here.
            legs.append(ledger.Leg(ledger.user_account(order.user_id), -shortfall, allow_debt=True))
        entries.append(
            ledger.NewEntry(
                EntryType.trade_capture,
                legs,
                f"Trades of order {order.id} into escrow",
                reference,
            )
        )
        held -= from_reserved
    keep = (
        0
        if done
        else trade_value_micros(order.quantity_wh - order.filled_wh, order.effective_price_micros)
    )
    if held > keep:
        entries.append(
            ledger.Transfer(
                ledger.user_account(order.user_id, AccountKind.reserved),
                ledger.user_account(order.user_id),
                held - keep,
                type=EntryType.order_release,
                description=f"Unused reservation of order {order.id}",
                reference=reference,
            ).entry()
        )
        held = keep
    order.reserved_micros = held
    return entries


async def _move_money(
    session: AsyncSession, buys: Iterable[tuple[MarketOrder, int, bool]], at: datetime
) -> None:
    """Every buy's capture and release as one ledger batch (a constant number of statements,
    accounts locked in id order, so it cannot deadlock with another clearing or an order)."""
    entries = [
        entry for order, captured, done in buys for entry in _settle_buy(order, captured, done=done)
    ]
    await ledger.post_entries(session, entries, at=at)


def _order_event(order: MarketOrder) -> dict[str, Any]:
    from gridex.market.service import order_out

    return order_out(order).model_dump(mode="json")


def _trade_event(trade: dict[str, Any]) -> dict[str, Any]:
    """The anonymised public form of a trade (no orders, no users)."""
    return {
        "id": str(trade["id"]),
        "region": trade["region"],
        "epoch": utc_iso(trade["epoch_start"]),
        "quantity_kwh": wh_to_kwh(trade["quantity_wh"]),
        "price": micros_to_money(trade["price_micros"]),
        "executed_at": utc_iso(trade["executed_at"]),
    }


def _emit_trades(
    session: AsyncSession, rt: Runtime, epoch: Epoch, rows: list[dict[str, Any]]
) -> None:
    channels = ("market", f"epoch:{utc_iso(epoch.start)}")
    for row in rows:
        public = _trade_event(row)
        emit(session, rt.pubsub, channels, "trade_executed", public, row["executed_at"])
        for user_id, side, order_key in (
            (row["buyer_id"], "buy", "buy_order_id"),
            (row["seller_id"], "sell", "sell_order_id"),
        ):
            private = {**public, "side": side, "order_id": str(row[order_key])}
            emit(
                session,
                rt.pubsub,
                (f"user:{user_id}",),
                "trade_executed",
                private,
                row["executed_at"],
            )


def _trade_row(
    epoch: Epoch,
    seq: int,
    buy: MarketOrder,
    sell: MarketOrder,
    quantity_wh: int,
    price_micros: int,
    fee_bps: int,
    at: datetime,
) -> dict[str, Any]:
    value = trade_value_micros(quantity_wh, price_micros)
    return {
        "id": uuid.uuid4(),
        "epoch_id": epoch.id,
        "region": epoch.region,
        "epoch_start": epoch.start,
        "seq": seq,
        "buy_order_id": buy.id,
        "sell_order_id": sell.id,
        "buyer_id": buy.user_id,
        "seller_id": sell.user_id,
        "quantity_wh": quantity_wh,
        "price_micros": price_micros,
        "value_micros": value,
        "fee_micros": fee_micros(value, fee_bps),
        "executed_at": at,
        "settlement_status": "pending",
    }


async def _fee_bps(session: AsyncSession, rt: Runtime, region: str) -> int:
    row = await session.get(RegionSettings, region)
    return row.fee_bps if row is not None else rt.settings.fee_bps


# --- continuous -----------------------------------------------------------------------------------


async def match_continuous(
    session: AsyncSession, rt: Runtime, epoch: Epoch, incoming: MarketOrder, fee_bps: int
) -> list[dict[str, Any]]:
    """Match ``incoming`` against the epoch's resting orders at the resting prices.

    The caller holds the epoch exclusively (PostgreSQL row lock; SQLite's single writer), so the
    book rebuilt here from the database, in arrival order, is the whole truth for this epoch.
    """
    resting = await repository.resting_orders(session, epoch.id, exclude=incoming.id)
    book = ContinuousBook()
    for order in resting:
        if book.add(_engine_order(order)):
            raise RuntimeError(f"epoch {epoch.id}: the stored book is crossed")
    matches = book.add(_engine_order(incoming))
    if not matches:
        return []
    now = rt.clock.now()
    orders = {str(o.id): o for o in resting}
    orders[str(incoming.id)] = incoming
    base = await repository.epoch_trade_count(session, epoch.id)
    rows = []
    captured: dict[str, int] = defaultdict(int)
    for i, match in enumerate(matches):
        buy, sell = orders[match.buy_order_id], orders[match.sell_order_id]
        row = _trade_row(
            epoch, base + i, buy, sell, match.quantity_wh, match.price_micros, fee_bps, now
        )
        rows.append(row)
        for order in (buy, sell):
            order.filled_wh += match.quantity_wh
            order.filled_value_micros += row["value_micros"]
            order.updated_at = now
        captured[match.buy_order_id] += row["value_micros"]
    await session.execute(insert(Trade), rows)
    touched = {o for m in matches for o in (m.buy_order_id, m.sell_order_id)}
    buys = sorted((orders[i] for i in captured), key=lambda o: (o.user_id.bytes, o.seq))
    for key in sorted(touched):
        order = orders[key]
        order.status = (
            OrderStatus.filled
            if order.filled_wh >= order.quantity_wh
            else OrderStatus.partially_filled
        )
    await _move_money(
        session,
        ((o, captured[str(o.id)], o.status is OrderStatus.filled) for o in buys),
        now,
    )
    await session.flush()
    _emit_trades(session, rt, epoch, rows)
    for key in sorted(touched):
        if key != str(incoming.id):
            order = orders[key]
            emit(
                session,
                rt.pubsub,
                (f"user:{order.user_id}",),
                "order_updated",
                _order_event(order),
                now,
            )
    return rows


# --- clearing ---------------------------------------------------------------------------------


async def clear_epoch(session: AsyncSession, rt: Runtime, epoch_id: uuid.UUID) -> bool:
    """Clear one epoch in the caller's transaction; False (and nothing written) when it is not
    due or another worker has cleared it already.

    Auction: the uniform-price auction over the epoch's open orders writes the trades, fills,
    final statuses and money. Continuous: the trades exist already; the resting rest expires.
    Either way the epoch gets its clearing record with the trades hash and ``epoch_cleared``
    is published after commit.
    """
    now = rt.clock.now()
    if not await repository.claim_epoch(session, epoch_id, now):
        return False
    epoch = await session.get(Epoch, epoch_id, populate_existing=True)
    assert epoch is not None
    fee_bps = await _fee_bps(session, rt, epoch.region)
    orders = await repository.resting_orders(session, epoch.id)
    if epoch.mechanism is Mechanism.auction:
        rows = await _auction(session, epoch, orders, fee_bps, now)
        trades = rows
        epoch.buy_orders = sum(1 for o in orders if o.side is Side.buy)
        epoch.sell_orders = len(orders) - epoch.buy_orders
    else:
        rows = []
        trades = [
            {
                "buy_order_id": t.buy_order_id,
                "sell_order_id": t.sell_order_id,
                "quantity_wh": t.quantity_wh,
                "price_micros": t.price_micros,
                "value_micros": t.value_micros,
            }
            for t in await repository.epoch_trades(session, epoch.id)
        ]
        counts = await session.execute(
            select(MarketOrder.side, func.count())
            .where(MarketOrder.epoch_id == epoch.id, MarketOrder.status != OrderStatus.cancelled)
            .group_by(MarketOrder.side)
        )
        by_side = {Side(side): int(n) for side, n in counts}
        epoch.buy_orders = by_side.get(Side.buy, 0)
        epoch.sell_orders = by_side.get(Side.sell, 0)

    # Whatever still rests is final now: expire the rest and give back what buys still hold.
    buys = sorted((o for o in orders if o.side is Side.buy), key=lambda o: (o.user_id.bytes, o.seq))
    captured: dict[uuid.UUID, int] = defaultdict(int)
    for row in rows:
        captured[row["buy_order_id"]] += row["value_micros"]
    for order in orders:
        order.status = _final_status(order)
        order.updated_at = now
    await _move_money(session, ((o, captured.get(o.id, 0), True) for o in buys), now)

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
    await session.flush()

    _emit_trades(session, rt, epoch, rows)
    for order in orders:
        emit(
            session,
            rt.pubsub,
            (f"user:{order.user_id}",),
            "order_updated",
            _order_event(order),
            now,
        )
    from gridex.market.service import epoch_out

    emit(
        session,
        rt.pubsub,
        ("market", f"epoch:{utc_iso(epoch.start)}"),
        "epoch_cleared",
        epoch_out(epoch, now).model_dump(mode="json"),
        now,
    )
    return True


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
        row = _trade_row(epoch, seq, buy, sell, quantity, price, fee_bps, now)
        rows.append(row)
        for order in (buy, sell):
            order.filled_wh += quantity
            order.filled_value_micros += row["value_micros"]
    if rows:
        await session.execute(insert(Trade), rows)
    return rows


async def clear_due(rt: Runtime) -> int:
    """The clearing job: clear every epoch past gate closure, each in its own transaction.

    Safe from several workers at once: the claim is a conditional update of the epoch's state,
    so a second worker's claim matches no row and writes nothing.
    """
    now = rt.clock.now()
    async with rt.db.sessionmaker() as session:
        await repository.close_due_epochs(session, now)
        await session.commit()
        due = await repository.due_epochs(session, now)
    cleared = 0
    for epoch_id in due:
        async with rt.db.sessionmaker() as session:
            if await clear_epoch(session, rt, epoch_id):
                await session.commit()
                cleared += 1
            else:
                await session.rollback()
    return cleared
