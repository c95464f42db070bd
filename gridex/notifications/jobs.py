"""The notifications job: order fills, clearing, settlement and withdrawal decisions, read
from their committed rows (see :mod:`gridex.notifications.facts`), become notifications."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.market.models import Epoch, MarketOrder, SettlementPosition, Side, Trade
from gridex.notifications.facts import Source, follow, unseen, unseen_since, uuid_key
from gridex.notifications.service import Draft, deliver
from gridex.payments.models import Withdrawal, WithdrawalStatus

log = structlog.get_logger(__name__)

# Facts read per source and run; the rest wait for the next run.
BATCH = 2000
# Settlement positions are read without an anti-join on their receipts (their key includes the
# time of the last re-settlement), so a window must hold fewer than this many: every position of
# every epoch settled within the look-back window.
SETTLEMENT_BATCH = 50_000


@dataclass(frozen=True, slots=True)
class Feed:
    """A source of facts and how one batch of its rows becomes drafts."""

    source: Source[Any]
    drafts: Callable[[AsyncSession, Sequence[Any]], Awaitable[list[Draft]]]


# Sources other domains add (billing: issued invoices), as a list of ``Feed`` under this name
# in ``Runtime.extensions``: the notifications domain cannot import them.
EXTRA_FEEDS = "notifications.extra_feeds"


# --- order fills ------------------------------------------------------------------------------


async def _trades(session: AsyncSession, since: datetime) -> Sequence[Trade]:
    return await unseen_since(session, Trade, Trade.executed_at, "trades", since, BATCH)


async def _trade_drafts(session: AsyncSession, trades: Sequence[Trade]) -> list[Draft]:
    drafts = []
    for t in trades:
        kwh, price = wh_to_kwh(t.quantity_wh), micros_to_money(t.price_micros)
        value = micros_to_money(t.value_micros)
        common = {
            "trade_id": str(t.id),
            "epoch": utc_iso(t.epoch_start),
            "region": t.region,
            "quantity_kwh": kwh,
            "price": price,
            "value": value,
        }
        drafts.append(
            Draft(
                t.buyer_id,
                "trade_executed",
                f"Bought {kwh} kWh at {price}",
                f"Your buy order filled {kwh} kWh at {price} per kWh ({value}) for the epoch "
                f"starting {utc_iso(t.epoch_start)}.",
                {**common, "side": "buy", "order_id": str(t.buy_order_id)},
            )
        )
        drafts.append(
            Draft(
                t.seller_id,
                "trade_executed",
                f"Sold {kwh} kWh at {price}",
                f"Your sell order filled {kwh} kWh at {price} per kWh ({value}) for the epoch "
                f"starting {utc_iso(t.epoch_start)}.",
                {**common, "side": "sell", "order_id": str(t.sell_order_id)},
            )
        )
    return drafts


TRADES = Feed(
    Source("trades", _trades, key=lambda t: t.id.hex, at=lambda t: t.executed_at), _trade_drafts
)


# --- clearing ---------------------------------------------------------------------------------


async def _cleared(session: AsyncSession, since: datetime) -> Sequence[Epoch]:
    return await unseen_since(session, Epoch, Epoch.cleared_at, "epochs_cleared", since, BATCH)


async def _clearing_drafts(session: AsyncSession, epochs: Sequence[Epoch]) -> list[Draft]:
    drafts = []
    for epoch in epochs:
        rows = await session.execute(
            select(
                MarketOrder.user_id,
                MarketOrder.side,
                func.sum(MarketOrder.quantity_wh),
                func.sum(MarketOrder.filled_wh),
            )
            .where(MarketOrder.epoch_id == epoch.id)
            .group_by(MarketOrder.user_id, MarketOrder.side)
        )
        per_user: dict[uuid.UUID, dict[str, tuple[int, int]]] = {}
        for user_id, side, quantity, filled in rows:
            per_user.setdefault(user_id, {})[Side(side).value] = (int(quantity), int(filled))
        start = utc_iso(epoch.start)
        price = micros_to_money(epoch.price_micros) if epoch.price_micros is not None else None
        for user_id, sides in per_user.items():
            parts = [
                f"{'bought' if side == 'buy' else 'sold'} {wh_to_kwh(filled)} of "
                f"{wh_to_kwh(quantity)} kWh"
                for side, (quantity, filled) in sorted(sides.items())
            ]
            outcome = f"at {price} per kWh" if price is not None else "without a trade"
            drafts.append(
                Draft(
                    user_id,
                    "epoch_cleared",
                    f"Epoch {start} cleared {outcome}",
                    f"The epoch starting {start} in {epoch.region} cleared {outcome}: you "
                    + " and ".join(parts)
                    + ".",
                    {
                        "epoch": start,
                        "region": epoch.region,
                        "price": price,
                        "bought_kwh": wh_to_kwh(sides.get("buy", (0, 0))[1]),
                        "sold_kwh": wh_to_kwh(sides.get("sell", (0, 0))[1]),
                    },
                )
            )
    return drafts


CLEARING = Feed(
    Source(
        "epochs_cleared",
        _cleared,
        key=lambda e: e.id.hex,
        at=lambda e: cast(datetime, e.cleared_at),
    ),
    _clearing_drafts,
)


# --- settlement -------------------------------------------------------------------------------


async def _settled(
    session: AsyncSession, since: datetime
) -> Sequence[tuple[SettlementPosition, Epoch]]:
    rows = await session.execute(
        select(SettlementPosition, Epoch)
        .join(Epoch, Epoch.id == SettlementPosition.epoch_id)
        .where(SettlementPosition.updated_at >= since)
        .order_by(SettlementPosition.updated_at)
        .limit(SETTLEMENT_BATCH)
    )
    return [(p, e) for p, e in rows.all()]


async def _settlement_drafts(
    session: AsyncSession, rows: Sequence[tuple[SettlementPosition, Epoch]]
) -> list[Draft]:
    drafts = []
    for p, epoch in rows:
        start = utc_iso(epoch.start)
        net = p.received_micros + p.credited_micros - p.charged_micros
        lines = []
        if p.sold_wh:
            lines.append(
                f"sold {wh_to_kwh(p.sold_wh)} kWh, delivered {wh_to_kwh(p.exported_wh)} kWh, "
                f"received {micros_to_money(p.received_micros)}"
            )
        if p.bought_wh:
            lines.append(
                f"bought {wh_to_kwh(p.bought_wh)} kWh, consumed {wh_to_kwh(p.imported_wh)} kWh"
            )
        if p.charged_micros:
            lines.append(f"shortfall charge {micros_to_money(p.charged_micros)}")
        if p.credited_micros:
            lines.append(f"feed-in credit {micros_to_money(p.credited_micros)}")
        drafts.append(
            Draft(
                p.user_id,
                "settlement_completed",
                f"Epoch {start} settled",
                f"The epoch starting {start} in {epoch.region} is settled: "
                + "; ".join(lines or ["nothing to pay or receive"])
                + ".",
                {
                    "epoch": start,
                    "region": epoch.region,
                    "received": micros_to_money(p.received_micros),
                    "charged": micros_to_money(p.charged_micros),
                    "credited": micros_to_money(p.credited_micros),
                    "net": micros_to_money(net),
                },
            )
        )
    return drafts


SETTLEMENT = Feed(
    Source(
        "settlement_positions",
        _settled,
        # A re-settlement replaces the row: a new fact, a new notification. (Read without an
        # anti-join: a window holds fewer positions than SETTLEMENT_BATCH.)
        key=lambda r: f"{r[0].epoch_id.hex}:{r[0].user_id.hex}:{r[0].updated_at.isoformat()}",
        at=lambda r: r[0].updated_at,
    ),
    _settlement_drafts,
)


# --- withdrawal decisions ---------------------------------------------------------------------


async def _decided(session: AsyncSession, since: datetime) -> Sequence[Withdrawal]:
    rows = await session.scalars(
        select(Withdrawal)
        .where(
            Withdrawal.decided_at >= since,
            Withdrawal.status != WithdrawalStatus.pending,
            unseen("withdrawals_decided", uuid_key(session, Withdrawal.id)),
        )
        .order_by(Withdrawal.decided_at, Withdrawal.id)
        .limit(BATCH)
    )
    return list(rows)


async def _withdrawal_drafts(session: AsyncSession, rows: Sequence[Withdrawal]) -> list[Draft]:
    drafts = []
    for w in rows:
        amount = micros_to_money(w.amount_micros)
        approved = w.status == WithdrawalStatus.approved
        verdict = "approved and paid out" if approved else "rejected; the amount is available again"
        reason = f" Reason: {w.reason}" if w.reason else ""
        drafts.append(
            Draft(
                w.user_id,
                "withdrawal_decided",
                f"Withdrawal of {amount} {w.currency} {w.status}",
                f"Your withdrawal of {amount} {w.currency} to {w.destination} was {verdict}."
                + reason,
                {
                    "withdrawal_id": str(w.id),
                    "status": w.status,
                    "amount": amount,
                    "currency": w.currency,
                },
            )
        )
    return drafts


WITHDRAWALS = Feed(
    Source(
        "withdrawals_decided",
        _decided,
        # A withdrawal is decided once: one notification each.
        key=lambda w: w.id.hex,
        at=lambda w: cast(datetime, w.decided_at),
    ),
    _withdrawal_drafts,
)

FEEDS = (TRADES, CLEARING, SETTLEMENT, WITHDRAWALS)


async def run_feed(rt: Runtime, feed: Feed) -> int:
    """One source's new facts become notifications, in one transaction; returns how many facts."""
    lookback = timedelta(seconds=rt.settings.alert_lookback_seconds)
    async with rt.db.sessionmaker() as session:
        facts = await follow(session, feed.source, rt.clock.now(), lookback)
        if facts:
            await deliver(session, rt, await feed.drafts(session, facts))
        await session.commit()
    return len(facts)


async def notify_facts(rt: Runtime) -> int:
    """Every feed in turn; one that fails is logged and tried again next run, the others go on."""
    feeds: list[Feed] = [*FEEDS, *cast(list[Feed], rt.extensions.get(EXTRA_FEEDS, []))]
    done = 0
    for feed in feeds:
        try:
            done += await run_feed(rt, feed)
        except Exception:
            log.exception("notification_feed_failed", source=feed.source.name)
    return done
