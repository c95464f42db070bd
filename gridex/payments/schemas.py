"""Request and response models of top-ups, webhooks, refunds and withdrawals."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from gridex.core.schemas import InputModel, Money, OutputModel, UtcDatetime
from gridex.ledger.schemas import AmountIn


class TopupIn(InputModel):
    amount: AmountIn


class PaymentIntentOut(OutputModel):
    id: uuid.UUID
    status: str
    provider: str
    amount: Money = Field(validation_alias="amount_micros")
    refunded: Money = Field(validation_alias="refunded_micros")
    currency: str
    created_at: UtcDatetime
    completed_at: UtcDatetime | None


class PaymentIntentCreatedOut(PaymentIntentOut):
    # Handed to the client that completes the payment with the provider; shown only here.
    client_secret: str


class WebhookData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    payment_intent_id: uuid.UUID
    amount: AmountIn


class WebhookEvent(BaseModel):
    """The provider's event; unknown fields are ignored, as providers add fields over time."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=100)
    type: str = Field(min_length=1, max_length=64)
    data: WebhookData


class WebhookOut(OutputModel):
    received: bool
    duplicate: bool
    outcome: str  # credited | failed | ignored


class RefundIn(InputModel):
    # Default: everything not refunded yet.
    amount: AmountIn | None = None
    reason: str | None = Field(default=None, max_length=500)


class RefundOut(OutputModel):
    id: uuid.UUID
    payment_id: uuid.UUID = Field(validation_alias="intent_id")
    amount: Money = Field(validation_alias="amount_micros")
    reason: str | None
    provider_ref: str
    created_at: UtcDatetime


class WithdrawalIn(InputModel):
    amount: AmountIn
    # Where the provider pays out: an IBAN, a card token, a payout account id.
    destination: str = Field(min_length=1, max_length=200)


class DecisionIn(InputModel):
    reason: str | None = Field(default=None, max_length=500)


class WithdrawalOut(OutputModel):
    id: uuid.UUID
    user_id: uuid.UUID
    amount: Money = Field(validation_alias="amount_micros")
    currency: str
    destination: str
    status: str
    reason: str | None
    provider_ref: str | None
    requested_at: UtcDatetime
    decided_at: UtcDatetime | None
