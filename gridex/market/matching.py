"""Continuous matching: an incoming (or modified) order matched at once against its epoch's
resting orders, by price-time priority at the resting order's price, written to the database and
the ledger in the caller's transaction."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.runtime import Runtime
from gridex.market import repository
from gridex.market.engine import ContinuousBook
from gridex.market.fills import (
    buys_in_lock_order,
    emit_order_updates,
    emit_trades,
    engine_order,
    fill,
    move_money,
    trade_row,
)
from gridex.market.models import Epoch, MarketOrder, OrderStatus


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
        if book.add(engine_order(order)):
            raise RuntimeError(f"epoch {epoch.id}: the stored book is crossed")
    matches = book.add(engine_order(incoming))
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
        row = trade_row(
            epoch, base + i, buy, sell, match.quantity_wh, match.price_micros, fee_bps, now
        )
        rows.append(row)
        fill(buy, match.quantity_wh, row["value_micros"], now)
        fill(sell, match.quantity_wh, row["value_micros"], now)
        captured[match.buy_order_id] += row["value_micros"]
    await repository.insert_trades(session, rows)
    touched = [
        orders[key]
        for key in sorted({o for m in matches for o in (m.buy_order_id, m.sell_order_id)})
    ]
    for order in touched:
        order.status = (
            OrderStatus.filled
            if order.filled_wh >= order.quantity_wh
            else OrderStatus.partially_filled
        )
    await move_money(
        session,
        (
            (o, captured[str(o.id)], o.status is OrderStatus.filled)
            for o in buys_in_lock_order(orders[key] for key in captured)
        ),
        now,
    )
    await session.flush()
    emit_trades(session, rt, epoch, rows)
    emit_order_updates(session, rt, (o for o in touched if o is not incoming), now)
    return rows
