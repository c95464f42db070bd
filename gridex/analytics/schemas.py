"""Analytics answers. Energy is kWh (JSON numbers, at most 3 decimals), money and prices
decimal strings (prices per kWh), shares percent with one decimal, masses kg with 3 decimals.
Every model survives a JSON round trip unchanged, so answers can be cached as JSON."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gridex.core.schemas import UtcDatetime

Group = Literal["day", "month"]


class Answer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class EnergyGroup(Answer):
    start: UtcDatetime
    produced_kwh: float
    consumed_kwh: float
    self_consumed_kwh: float
    exported_kwh: float
    imported_kwh: float


class Environment(Answer):
    region: str | None
    emission_factor_kg_per_kwh: str
    grid_emissions_kg: float
    avoided_emissions_kg: float


class EnergyOut(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    region: str | None
    meters: int
    produced_kwh: float
    consumed_kwh: float
    exported_kwh: float
    imported_kwh: float
    self_consumed_kwh: float
    bought_local_kwh: float
    sold_local_kwh: float
    self_sufficiency_percent: float | None
    environment: Environment
    groups: list[EnergyGroup]


class TradingOut(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    region: str | None
    sold_kwh: float
    bought_kwh: float
    sales: str
    purchases: str
    fees: str
    average_sell_price: str | None
    average_buy_price: str | None
    grid_import_price: str
    feed_in_price: str
    saved_vs_grid: str
    earned_vs_feed_in: str
    trades: int


class MeterTotal(Answer):
    meter_id: uuid.UUID
    serial: str
    owner_id: uuid.UUID | None
    consumed_kwh: float
    produced_kwh: float


class PricePoint(Answer):
    start: UtcDatetime
    epochs: int
    volume_kwh: float
    average_price: str | None
    high: str | None
    low: str | None


class MarketOut(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    region: str
    epochs: int
    cleared_epochs: int
    cleared_share_percent: float | None
    orders: int
    buy_orders: int
    sell_orders: int
    volume_kwh: float
    turnover: str
    average_price: str | None
    average_spread: str | None
    epochs_with_both_sides: int
    history: list[PricePoint]


class MarketSummary(Answer):
    epochs: int
    cleared_epochs: int
    cleared_share_percent: float | None
    orders: int
    volume_kwh: float
    average_price: str | None
    average_spread: str | None


class DashboardOut(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    region: str
    meters: int
    meters_active: int
    meters_online: int
    consumed_kwh: float
    produced_kwh: float
    met_locally_kwh: float
    local_share_percent: float | None
    imported_kwh: float
    exported_kwh: float
    peak_load_kw: float
    peak_at: UtcDatetime | None
    market: MarketSummary
    top_consumers: list[MeterTotal]
    top_producers: list[MeterTotal]


class Holding(Answer):
    installation_id: uuid.UUID
    meter_id: uuid.UUID
    serial: str
    region: str
    share_percent: float
    produced_kwh: float
    attributable_kwh: float


class MonthAmount(Answer):
    month: str
    amount: str


class InvestmentsOut(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    installations: list[Holding]
    produced_kwh: float
    attributable_kwh: float
    revenue: str
    revenue_by_month: list[MonthAmount]
    capital: str | None
    return_percent: float | None


class UsersOut(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    total: int
    by_role: dict[str, int]
    by_status: dict[str, int]
    active: int
    new: int


class Invoices(Answer):
    count: int
    amount: str


class FinancialOut(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    currency: str
    fees_earned: str
    volume_settled_kwh: float
    value_settled: str
    trades_settled: int
    deposits: str
    refunds: str
    withdrawals: str
    outstanding_invoices: Invoices | None


class ConsumptionRow(Answer):
    start: UtcDatetime
    consumed_kwh: float
    produced_kwh: float
    self_consumed_kwh: float
    imported_kwh: float
    exported_kwh: float


class ConsumptionReport(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    region: str | None
    group: Group
    rows: list[ConsumptionRow]


class RevenueRow(Answer):
    month: str
    sold_kwh: float
    bought_kwh: float
    sales: str
    fees: str
    revenue_shares: str
    grid_credits: str
    grid_charges: str
    net: str


class RevenueReport(Answer):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    region: str | None
    currency: str
    rows: list[RevenueRow]
