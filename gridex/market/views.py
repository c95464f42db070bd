"""The market's API views of its rows (``*_out``) and the event payloads built from them.

Every layer that publishes an event about an order or an epoch (placing, matching, clearing,
settlement) takes the payload from here, so an event says exactly what the API answers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from gridex.core.units import round_half_even
from gridex.market.models import Epoch, EpochState, MarketOrder, Side, Trade
from gridex.market.regions import MarketParams
from gridex.market.schemas import (
    ClearingOut,
    EpochOut,
    OrderOut,
    PublicTradeOut,
    RegionSettingsOut,
    SettlementOut,
    TradeOut,
)
from gridex.regions.models import Region


def params_out(params: MarketParams, region: Region) -> RegionSettingsOut:
    return RegionSettingsOut(
        region=params.region,
        timezone=region.timezone,
        meter_approval=region.meter_approval,
        mechanism=params.mechanism,
        min_price=params.min_price_micros,
        max_price=params.max_price_micros,
        fee_bps=params.fee_bps,
        source=params.source,
        updated_at=params.updated_at,
    )


def effective_state(epoch: Epoch, now: datetime) -> EpochState:
    """The stored state, except that an open epoch past gate closure reads as closed even
    before the clearing job has run."""
    if epoch.state is EpochState.open and now >= epoch.gate_closure:
        return EpochState.closed
    return epoch.state


def epoch_out(epoch: Epoch, now: datetime) -> EpochOut:
    clearing_out = None
    if epoch.cleared_at is not None and epoch.trades_hash is not None:
        clearing_out = ClearingOut(
            price=epoch.price_micros,
            volume_kwh=epoch.volume_wh or 0,
            buy_orders=epoch.buy_orders or 0,
            sell_orders=epoch.sell_orders or 0,
            trades=epoch.trade_count or 0,
            trades_hash=epoch.trades_hash,
            cleared_at=epoch.cleared_at,
            chain_signature=epoch.chain_signature,
        )
    return EpochOut(
        region=epoch.region,
        start=epoch.start,
        end=epoch.end,
        gate_closure=epoch.gate_closure,
        state=effective_state(epoch, now),
        mechanism=epoch.mechanism,
        clearing=clearing_out,
        settlement=settlement_out(epoch),
    )


def settlement_out(epoch: Epoch) -> SettlementOut | None:
    """The epoch's settlement record, null until settled."""
    if epoch.settled_at is None or epoch.state is not EpochState.settled:
        return None
    return SettlementOut(
        settled_at=epoch.settled_at,
        paid_to_sellers=epoch.settlement_paid_micros or 0,
        fees=epoch.settlement_fees_micros or 0,
        revenue_shared=epoch.settlement_shared_micros or 0,
        shortfall_charges=epoch.settlement_charges_micros or 0,
        credits=epoch.settlement_credits_micros or 0,
        grid_import_price=epoch.settlement_import_price_micros or 0,
        feed_in_price=epoch.settlement_feed_in_price_micros or 0,
        adjustments=epoch.settlement_adjustments or 0,
        adjusted_at=epoch.settlement_adjusted_at,
    )


def order_out(order: MarketOrder) -> OrderOut:
    return OrderOut(
        id=order.id,
        side=order.side,
        type=order.type,
        region=order.region,
        epoch=order.epoch_start,
        quantity_kwh=order.quantity_wh,
        filled_kwh=order.filled_wh,
        limit_price=order.limit_price_micros,
        average_price=average_price(order),
        reserved=order.reserved_micros,
        status=order.status,
        client_order_id=order.client_order_id,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def average_price(order: MarketOrder) -> int | None:
    """Volume-weighted price of the fills per kWh (micros, half-even), None without fills."""
    if not order.filled_wh:
        return None
    return round_half_even(order.filled_value_micros * 1000, order.filled_wh)


def trade_out(trade: Trade, user_id: uuid.UUID) -> TradeOut:
    """The trade as ``user_id``, one of its two sides, sees it: the fee is the reader's own (the
    seller pays the platform's fee out of the payout; a buyer pays none)."""
    side = Side.buy if trade.buyer_id == user_id else Side.sell
    return TradeOut(
        id=trade.id,
        region=trade.region,
        epoch=trade.epoch_start,
        side=side,
        quantity_kwh=trade.quantity_wh,
        price=trade.price_micros,
        value=trade.value_micros,
        fee=trade.fee_micros if side is Side.sell else 0,
        buy_order_id=trade.buy_order_id,
        sell_order_id=trade.sell_order_id,
        executed_at=trade.executed_at,
        settlement_status=trade.settlement_status,
    )


def public_trade_out(trade: Trade) -> PublicTradeOut:
    return PublicTradeOut(
        id=trade.id,
        region=trade.region,
        epoch=trade.epoch_start,
        quantity_kwh=trade.quantity_wh,
        price=trade.price_micros,
        executed_at=trade.executed_at,
    )


def order_event(order: MarketOrder) -> dict[str, Any]:
    """``order_placed`` / ``order_updated``: the order as the API shows it."""
    return order_out(order).model_dump(mode="json")


def epoch_event(epoch: Epoch, now: datetime) -> dict[str, Any]:
    """``epoch_cleared`` and the public ``settlement_completed``: the epoch as the API shows it."""
    return epoch_out(epoch, now).model_dump(mode="json")
