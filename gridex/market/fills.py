"""What a trade writes, shared by auction clearing and continuous matching: the trade rows,
each buy's money moves and the ``trade_executed`` and ``order_updated`` events.

Money, per buy order (sells hold nothing): a fill's value goes from the buyer's ``reserved`` to
``escrow`` (tagged with the buyer); once the order can fill no more (filled, expired, cancelled)
whatever it still holds goes back to ``available``. A buy holds ``value(unfilled rest, limit)``;
as each trade's value is rounded on its own, a buy split into several trades can owe a few micros
more than it holds: those come from the buyer's ``available`` in the same entry (see
docs/market.md, "Money").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.metrics import TRADED_ENERGY, TRADES, after_commit
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.ledger import service as ledger
from gridex.ledger.models import AccountKind, EntryType, ReferenceType
from gridex.market.engine import Order as EngineOrder
from gridex.market.engine import Side as EngineSide
from gridex.market.engine import fee_micros, trade_value_micros
from gridex.market.models import Epoch, MarketOrder, Side
from gridex.market.views import order_event


def engine_order(order: MarketOrder) -> EngineOrder:
    """The order's unfilled rest as the engine sees it (price: its effective limit)."""
    side = EngineSide.BUY if order.side is Side.buy else EngineSide.SELL
    return EngineOrder(
        str(order.id),
        side,
        order.quantity_wh - order.filled_wh,
        order.effective_price_micros,
        order.seq,
    )


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


async def move_money(
    session: AsyncSession, buys: Iterable[tuple[MarketOrder, int, bool]], at: datetime
) -> None:
    """Every buy's capture and release as one ledger batch (a constant number of statements,
    accounts locked in id order, so it cannot deadlock with another clearing or an order)."""
    entries = [
        entry for order, captured, done in buys for entry in _settle_buy(order, captured, done=done)
    ]
    await ledger.post_entries(session, entries, at=at)


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


def emit_trades(
    session: AsyncSession, rt: Runtime, epoch: Epoch, rows: list[dict[str, Any]]
) -> None:
    channels = ("market", f"epoch:{utc_iso(epoch.start)}")
    if rows:
        energy = sum(row["quantity_wh"] for row in rows)
        after_commit(session, lambda: _count_trades(epoch.region, len(rows), energy))
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


def _count_trades(region: str, trades: int, energy_wh: int) -> None:
    TRADES.labels(region).inc(trades)
    TRADED_ENERGY.labels(region).inc(energy_wh)


def trade_row(
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


def fill(order: MarketOrder, quantity_wh: int, value_micros: int, at: datetime) -> None:
    """Add a trade of ``quantity_wh`` worth ``value_micros`` to what ``order`` has filled."""
    order.filled_wh += quantity_wh
    order.filled_value_micros += value_micros
    order.updated_at = at


def buys_in_lock_order(orders: Iterable[MarketOrder]) -> list[MarketOrder]:
    """The buy orders among ``orders`` in the order their money moves: by user, then arrival."""
    return sorted((o for o in orders if o.side is Side.buy), key=lambda o: (o.user_id.bytes, o.seq))


def emit_order_updates(
    session: AsyncSession, rt: Runtime, orders: Iterable[MarketOrder], at: datetime
) -> None:
    for order in orders:
        emit(
            session, rt.pubsub, (f"user:{order.user_id}",), "order_updated", order_event(order), at
        )
