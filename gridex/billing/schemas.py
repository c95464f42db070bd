"""Request and response models of billing. Money is a 6-decimal string (credits negative),
energy kWh, times ISO 8601 UTC."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from pydantic import Field

from gridex.core.schemas import InputModel, Kwh, Money, OutputModel, UtcDatetime
from gridex.ledger.schemas import AmountIn


class LineOut(OutputModel):
    kind: str
    description: str
    band: str | None = None
    quantity_kwh: Kwh | None = Field(default=None, validation_alias="quantity_wh")
    unit_price: Money | None = Field(default=None, validation_alias="unit_price_micros")
    amount: Money = Field(validation_alias="amount_micros")
    # Where the line comes from: meter ids and UTC windows (its readings), trade ids, or
    # ledger entry ids.
    source: dict[str, Any] = Field(default_factory=dict, validation_alias="trace")


class DisputeOut(OutputModel):
    id: uuid.UUID
    invoice_id: uuid.UUID
    status: str
    reason: str
    resolution: str | None
    credit_note_id: uuid.UUID | None
    created_at: UtcDatetime
    resolved_at: UtcDatetime | None


class InvoiceSummaryOut(OutputModel):
    id: uuid.UUID
    number: str
    kind: str  # invoice | credit_note
    corrects_id: uuid.UUID | None
    user_id: uuid.UUID
    region: str
    period: str
    status: str
    issued_at: UtcDatetime
    due_date: date
    currency: str
    subtotal: Money = Field(validation_alias="subtotal_micros")
    tax: Money = Field(validation_alias="tax_micros")
    total: Money = Field(validation_alias="total_micros")
    # Of the total, what the market already settled through the wallet epoch by epoch.
    settled_amount: Money = Field(validation_alias="settled_micros")
    paid_amount: Money = Field(validation_alias="paid_micros")
    corrections: Money = Field(validation_alias="corrected_micros")
    amount_due: Money = Field(validation_alias="amount_due_micros")
    overdue_at: UtcDatetime | None
    paid_at: UtcDatetime | None


class MeterRef(OutputModel):
    id: str
    serial: str
    kind: str


class InvoiceOut(InvoiceSummaryOut):
    period_start: UtcDatetime
    period_end: UtcDatetime
    timezone: str
    tax_rate: str
    meters: list[MeterRef]
    lines: list[LineOut]
    dispute: DisputeOut | None = None


class PaymentOut(OutputModel):
    id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Money = Field(validation_alias="amount_micros")
    method: str  # wallet | credit_payout
    entry_id: uuid.UUID
    created_at: UtcDatetime


class DisputeIn(InputModel):
    reason: str = Field(min_length=3, max_length=2000)


class DisputeResolveIn(InputModel):
    resolution: str = Field(min_length=1, max_length=2000)
    credit_amount: AmountIn | None = None


class CycleOut(OutputModel):
    period: str
    regions: list[str]
    issued: int
    corrections: int
    unchanged: int


class BillingEstimateLineOut(OutputModel):
    kind: str
    description: str
    band: str | None = None
    quantity_kwh: Kwh | None = None
    unit_price: Money | None = None
    amount: Money


class CurrentCycleOut(OutputModel):
    region: str
    period: str
    period_start: UtcDatetime
    period_end: UtcDatetime
    as_of: UtcDatetime
    currency: str
    lines: list[BillingEstimateLineOut]
    subtotal: Money
    tax: Money
    total: Money
    daily: list[dict[str, Any]]


class BillingEstimateOut(OutputModel):
    region: str
    period: str
    as_of: UtcDatetime
    currency: str
    # The month so far, and the whole month projected from it (each line scaled by the month's
    # length over the time elapsed).
    to_date_total: Money
    lines: list[BillingEstimateLineOut]
    subtotal: Money
    tax: Money
    total: Money


class BillingAnalyticsOut(OutputModel):
    region: str | None
    period: str | None
    currency: str
    invoices: int
    credit_notes: int
    billed: Money
    settled_through_wallet: Money
    paid: Money
    outstanding: Money
    overdue: Money
    tax: Money
    by_status: dict[str, int]
    disputes: dict[str, int]


class OverdueRegionOut(OutputModel):
    region: str
    invoices: int
    amount_due: Money
