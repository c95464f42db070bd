"""Request and response models of the market API.

At this edge energy is kWh (JSON numbers, <= 3 decimals) and prices and money are decimal strings
(inputs: string or number); inside they are integer Wh and micros. Input fields named ``*_kwh`` /
``*_price`` hold the converted integers after validation; the service takes them as
:class:`NewOrder` / :class:`OrderChange`, whose names say the stored units.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from gridex.core.schemas import AwareDatetime, InputModel, Kwh, Money, OutputModel, UtcDatetime
from gridex.core.units import UnitError, kwh_to_wh, money_to_micros
from gridex.market.models import EpochState, Mechanism, OrderStatus, OrderType, Side
from gridex.regions.models import MeterApproval

# One order's quantity: at most 1 GWh, far inside the engine's 2**61 Wh per side.
MAX_ORDER_WH = 10**9
# A price per kWh: at most 1,000,000 currency units.
MAX_PRICE_MICROS = 10**12


def _stored(value: object, convert: Callable[[Any], int], not_a_number: str) -> int:
    """``value`` (a number, or a decimal string) converted by ``convert`` into a stored integer;
    a ``ValueError`` with the reason (pydantic reports it as a validation error) otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(not_a_number)
    try:
        return convert(value)
    except UnitError as exc:
        raise ValueError(str(exc)) from exc


def _wh(value: object) -> int:
    wh = _stored(value, kwh_to_wh, "quantity_kwh must be a number")
    if wh <= 0:
        raise ValueError("quantity_kwh must be greater than zero")
    if wh > MAX_ORDER_WH:
        raise ValueError(f"quantity_kwh must be at most {MAX_ORDER_WH // 1000}")
    return wh


def _price(value: object) -> int:
    micros = _stored(value, money_to_micros, "a price must be a decimal string or a number")
    if micros < 0:
        raise ValueError("a price must not be negative")
    if micros > MAX_PRICE_MICROS:
        raise ValueError("the price is too large")
    return micros


# Input: kWh (number, <= 3 decimals, > 0) validated into integer Wh.
QuantityIn = Annotated[
    int,
    BeforeValidator(_wh),
    WithJsonSchema({"type": "number", "example": 1.5, "description": "kWh, <= 3 decimals, > 0"}),
]
# Input: a price per kWh (string or number, <= 6 decimals, >= 0) validated into micros.
PriceIn = Annotated[
    int,
    BeforeValidator(_price),
    WithJsonSchema({"type": "string", "example": "0.125000", "description": "per kWh"}),
]


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A validated order request in stored units."""

    side: Side
    type: OrderType
    quantity_wh: int
    limit_price_micros: int | None  # None for a market order
    epoch: datetime | None  # None: the next open epoch
    client_order_id: str | None
    region: str | None  # None: the user's own, else the region of their eligible meter


@dataclass(frozen=True, slots=True)
class OrderChange:
    """A validated change of an order in stored units (None: unchanged)."""

    quantity_wh: int | None
    limit_price_micros: int | None


class OrderIn(InputModel):
    side: Side
    type: OrderType = OrderType.limit
    quantity_kwh: QuantityIn
    limit_price: PriceIn | None = Field(default=None, description="Required for a limit order")
    epoch: AwareDatetime | None = Field(
        default=None,
        description="Start of the epoch, on an epoch boundary (with 15-minute epochs: :00, "
        ":15, :30 or :45), before its gate closure and within the trading horizon; default: "
        "the next one still open",
        examples=["2026-01-01T12:15:00Z"],
    )
    client_order_id: str | None = Field(default=None, min_length=1, max_length=64)
    region: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Default: your region, else the region of your eligible meter",
    )

    @model_validator(mode="after")
    def _limit_matches_type(self) -> OrderIn:
        if self.type is OrderType.limit and self.limit_price is None:
            raise ValueError("a limit order needs limit_price")
        if self.type is OrderType.market and self.limit_price is not None:
            raise ValueError("a market order takes no limit_price")
        return self

    def as_new_order(self) -> NewOrder:
        return NewOrder(
            side=self.side,
            type=self.type,
            quantity_wh=self.quantity_kwh,
            limit_price_micros=self.limit_price,
            epoch=self.epoch,
            client_order_id=self.client_order_id,
            region=self.region,
        )


class OrderUpdate(InputModel):
    quantity_kwh: QuantityIn | None = None
    limit_price: PriceIn | None = None

    @model_validator(mode="after")
    def _something(self) -> OrderUpdate:
        if self.quantity_kwh is None and self.limit_price is None:
            raise ValueError("give quantity_kwh, limit_price or both")
        return self

    def as_change(self) -> OrderChange:
        return OrderChange(quantity_wh=self.quantity_kwh, limit_price_micros=self.limit_price)


class FillOut(OutputModel):
    trade_id: uuid.UUID
    quantity_kwh: Kwh
    price: Money
    executed_at: UtcDatetime


class OrderOut(OutputModel):
    id: uuid.UUID
    side: Side
    type: OrderType
    region: str
    epoch: UtcDatetime
    quantity_kwh: Kwh
    filled_kwh: Kwh
    limit_price: Money | None
    average_price: Money | None
    reserved: Money
    status: OrderStatus
    client_order_id: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class OrderDetailOut(OrderOut):
    fills: list[FillOut]


class ClearingOut(OutputModel):
    price: Money | None
    volume_kwh: Kwh
    buy_orders: int
    sell_orders: int
    trades: int
    trades_hash: str
    cleared_at: UtcDatetime
    chain_signature: str | None


class SettlementOut(OutputModel):
    """Totals of an epoch's settlement, including later re-settlements after corrections.

    ``paid_to_sellers``: trade values minus fees, of which ``revenue_shared`` went on to
    installation share holders and the platform; ``shortfall_charges`` were paid to the grid by
    sellers that delivered less than they sold; ``credits`` were paid by the grid to buyers that
    consumed less than they bought. Prices per kWh as fixed at settlement.
    """

    settled_at: UtcDatetime
    paid_to_sellers: Money
    fees: Money
    revenue_shared: Money
    shortfall_charges: Money
    credits: Money
    grid_import_price: Money
    feed_in_price: Money
    adjustments: int
    adjusted_at: UtcDatetime | None


class EpochOut(OutputModel):
    region: str
    start: UtcDatetime
    end: UtcDatetime
    gate_closure: UtcDatetime
    state: EpochState
    mechanism: Mechanism
    clearing: ClearingOut | None
    settlement: SettlementOut | None = None


class CurrentEpochsOut(OutputModel):
    open: EpochOut
    delivering: EpochOut


class LevelOut(OutputModel):
    price: Money
    quantity_kwh: Kwh
    orders: int
    own_quantity_kwh: Kwh
    own_orders: int


class OrderBookOut(OutputModel):
    region: str
    epoch: UtcDatetime
    state: EpochState
    mechanism: Mechanism
    bids: list[LevelOut]
    asks: list[LevelOut]


class TradeOut(OutputModel):
    id: uuid.UUID
    region: str
    epoch: UtcDatetime
    side: Side
    quantity_kwh: Kwh
    price: Money
    value: Money
    fee: Money = Field(
        description="The fee you pay on this trade: sellers pay the region's fee out of the "
        "payout, buyers none"
    )
    buy_order_id: uuid.UUID
    sell_order_id: uuid.UUID
    executed_at: UtcDatetime
    settlement_status: str


class PublicTradeOut(OutputModel):
    id: uuid.UUID
    region: str
    epoch: UtcDatetime
    quantity_kwh: Kwh
    price: Money
    executed_at: UtcDatetime


class OpenInterestOut(OutputModel):
    epoch: UtcDatetime
    buy_kwh: Kwh
    sell_kwh: Kwh
    buy_orders: int
    sell_orders: int


class MarketDataOut(OutputModel):
    region: str
    currency: str
    last_price: Money | None
    last_epoch: UtcDatetime | None
    last_volume_kwh: Kwh
    vwap_24h: Money | None
    high_24h: Money | None
    low_24h: Money | None
    volume_24h_kwh: Kwh
    trades_24h: int
    open_interest: OpenInterestOut


class HistoryOut(OutputModel):
    epoch: UtcDatetime
    state: EpochState
    price: Money | None
    volume_kwh: Kwh
    trades: int


class RegionSettingsIn(InputModel):
    mechanism: Mechanism
    min_price: PriceIn
    max_price: PriceIn
    fee_bps: int = Field(ge=0, le=10_000, description="Basis points of a trade's value, 100 = 1 %")
    timezone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA time zone of the region's local time; UTC for a new region without one",
        examples=["Europe/Berlin"],
    )
    meter_approval: MeterApproval | None = Field(
        default=None,
        description="`operator`: a member's new meter is `pending` until an operator approves "
        "it; `auto` (a new region's default): active at once. Omitted: unchanged",
    )

    @model_validator(mode="after")
    def _band(self) -> RegionSettingsIn:
        if self.min_price > self.max_price:
            raise ValueError("min_price is above max_price")
        return self


class RegionSettingsOut(OutputModel):
    region: str
    timezone: str
    meter_approval: MeterApproval
    mechanism: Mechanism
    min_price: Money
    max_price: Money
    fee_bps: int
    source: Literal["region", "tariff", "default"] = Field(
        description="`tariff`: the region has no settings and its band is its tariff's feed-in"
        " .. import price now; `default`: no settings and no tariff, the deployment's"
    )
    updated_at: UtcDatetime | None


class EpochTradeOut(OutputModel):
    """One trade as the trades hash covers it: order ids, Wh and price micros per kWh."""

    buy_order_id: uuid.UUID
    sell_order_id: uuid.UUID
    quantity_wh: int
    price_micros: int


class EpochTradesOut(OutputModel):
    epoch: UtcDatetime
    region: str
    trades_hash: str
    trades: list[EpochTradeOut]


class MemberSettlementOut(OutputModel):
    """One member's settlement in one epoch, as last settled (re-settlements included).

    Energy: what the member sold and bought, what its meters delivered (exported) and consumed
    (imported) in the epoch, and the delivery shortfall / unconsumed energy. Money: ``proceeds``
    (paid for its sales, after the fee and revenue shares passed on), ``fee`` (the platform's
    fee on its sales), ``revenue_shares`` (received as a share holder of installations),
    ``shortfall_charge`` (paid to the grid at the import price), ``feed_in_credit`` (from the
    grid at the feed-in price), ``purchases`` (paid at clearing for what it bought) and
    ``net`` = proceeds + revenue_shares + feed_in_credit - shortfall_charge - purchases.
    ``entries``: the ledger entries of the epoch that touch the member.
    """

    epoch: UtcDatetime
    region: str
    user_id: uuid.UUID
    sold_kwh: Kwh
    bought_kwh: Kwh
    delivered_kwh: Kwh
    consumed_kwh: Kwh
    shortfall_kwh: Kwh
    unconsumed_kwh: Kwh
    proceeds: Money
    fee: Money
    revenue_shares: Money
    shortfall_charge: Money
    feed_in_credit: Money
    purchases: Money
    net: Money
    grid_import_price: Money | None
    feed_in_price: Money | None
    settled_at: UtcDatetime | None
    entries: list[uuid.UUID]
