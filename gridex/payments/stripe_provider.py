"""The Stripe adapter: payment intents, refunds and Connect transfers through Stripe's API, and
Stripe's own webhook events read into Gridex's.

Selected with ``GRIDEX_PAYMENT_PROVIDER=stripe``, with ``GRIDEX_STRIPE_API_KEY`` (``sk_...``)
and ``GRIDEX_STRIPE_WEBHOOK_SECRET`` (the endpoint's ``whsec_...``). Stripe posts to the same
``POST /api/v1/payments/webhook``; its events carry the ``Stripe-Signature`` header, verified
by Stripe's scheme: HMAC-SHA256 keyed with the endpoint secret over ``"<t>.<raw body>"``, any
``v1`` signature matching, ``t`` within the tolerance.

Amounts: Stripe speaks integer minor units of the currency (cents; none for JPY, thousandths for
KWD); Gridex micros. A top-up that is not a whole number of minor units is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import stripe

from gridex.core.errors import ValidationFailed
from gridex.payments.providers import ProviderIntent, ProviderRef

SIGNATURE_HEADER = "Stripe-Signature"
NAME = "stripe"

# Stripe's zero- and three-decimal currencies; every other one has two decimals.
_ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
MICROS_PER_UNIT = 1_000_000


def micros_per_minor_unit(currency: str) -> int:
    code = currency.upper()
    if code in _ZERO_DECIMAL:
        return MICROS_PER_UNIT
    if code in _THREE_DECIMAL:
        return MICROS_PER_UNIT // 1000
    return MICROS_PER_UNIT // 100


def to_minor_units(amount_micros: int, currency: str) -> int:
    """Micros -> Stripe's integer amount; 422 when the amount has finer digits than that."""
    per = micros_per_minor_unit(currency)
    if amount_micros % per:
        raise ValidationFailed(
            f"{currency} amounts go to Stripe in whole minor units; "
            f"this amount has more decimals than {currency} has",
            details={"field": "amount"},
        )
    return amount_micros // per


def from_minor_units(amount: int, currency: str) -> int:
    return amount * micros_per_minor_unit(currency)


@dataclass(frozen=True, slots=True)
class StripeEvent:
    """What a Stripe event means for a Gridex top-up."""

    id: str
    type: str
    # "succeeded", "failed", or None: the event moves no top-up (recorded and ignored).
    outcome: str | None
    payment_intent: str | None  # Stripe's pi_... id: the top-up's provider_ref
    gridex_payment_id: uuid.UUID | None  # from metadata / client_reference_id, when present
    amount_micros: int | None
    currency: str | None


def _gridex_id(obj: dict[str, Any]) -> uuid.UUID | None:
    metadata = obj.get("metadata")
    candidates = [
        metadata.get("gridex_payment_id") if isinstance(metadata, dict) else None,
        obj.get("client_reference_id"),
    ]
    for value in candidates:
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                continue
    return None


def _amount(obj: dict[str, Any], field: str, currency: str | None) -> int | None:
    value = obj.get(field)
    if currency is None or type(value) is not int or value < 0:
        return None
    return from_minor_units(value, currency)


def parse_event(body: bytes) -> StripeEvent:
    """Read a (verified) Stripe event body. ``payment_intent.succeeded`` and a paid
    ``checkout.session.completed`` (or ``checkout.session.async_payment_succeeded``) succeed a
    top-up; ``payment_intent.canceled``, ``checkout.session.async_payment_failed`` and
    ``checkout.session.expired`` fail it. ``payment_intent.payment_failed`` does not: the payer
    may still complete the same intent with another card. Every other type is ignored."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("The event is not JSON") from exc
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    event_id, event_type = (
        (event.get("id"), event.get("type")) if isinstance(event, dict) else ("", "")
    )
    if (
        not isinstance(event_id, str)
        or not 0 < len(event_id) <= 100
        or not isinstance(event_type, str)
        or not 0 < len(event_type) <= 64
        or not isinstance(obj, dict)
    ):
        raise ValidationFailed(
            "Not a Stripe event: it needs id, type and data.object",
            details={"fields": [{"loc": ["body"], "message": "id, type, data.object"}]},
        )
    currency = obj.get("currency")
    currency = currency.upper() if isinstance(currency, str) and currency.isalpha() else None
    outcome: str | None = None
    payment_intent: str | None = None
    amount: int | None = None
    if event_type.startswith("payment_intent.") and obj.get("object") == "payment_intent":
        payment_intent = obj.get("id") if isinstance(obj.get("id"), str) else None
        if event_type == "payment_intent.succeeded":
            outcome = "succeeded"
            amount = _amount(obj, "amount_received", currency)
        elif event_type == "payment_intent.canceled":
            outcome = "failed"
    elif event_type.startswith("checkout.session.") and obj.get("object") == "checkout.session":
        pi = obj.get("payment_intent")
        payment_intent = pi if isinstance(pi, str) else None
        paid = obj.get("payment_status") == "paid"
        if event_type == "checkout.session.async_payment_succeeded" or (
            event_type == "checkout.session.completed" and paid
        ):
            outcome = "succeeded"
            amount = _amount(obj, "amount_total", currency)
        elif event_type in (
            "checkout.session.async_payment_failed",
            "checkout.session.expired",
        ):
            outcome = "failed"
    return StripeEvent(
        id=event_id,
        type=event_type,
        outcome=outcome,
        payment_intent=payment_intent,
        gridex_payment_id=_gridex_id(obj),
        amount_micros=amount,
        currency=currency,
    )


class StripeProvider:
    """Payment intents and refunds on the platform's Stripe account; withdrawals are paid out as
    transfers to the user's connected account (a destination ``acct_...``)."""

    name = NAME

    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    @classmethod
    def with_key(cls, api_key: str) -> StripeProvider:
        if not api_key:
            raise ValueError("GRIDEX_STRIPE_API_KEY is required for the stripe payment provider")
        return cls(stripe.StripeClient(api_key, http_client=stripe.HTTPXClient()))

    async def create_intent(
        self, *, intent_id: uuid.UUID, amount_micros: int, currency: str
    ) -> ProviderIntent:
        intent = await self.client.v1.payment_intents.create_async(
            params={
                "amount": to_minor_units(amount_micros, currency),
                "currency": currency.lower(),
                "metadata": {"gridex_payment_id": str(intent_id)},
                "automatic_payment_methods": {"enabled": True},
            },
            # Stripe's own idempotency: a retried create never opens a second intent.
            options={"idempotency_key": f"gridex-topup-{intent_id}"},
        )
        return ProviderIntent(intent.id, intent.client_secret or "")

    async def refund(self, *, provider_ref: str, amount_micros: int) -> ProviderRef:
        intent = await self.client.v1.payment_intents.retrieve_async(provider_ref)
        refund = await self.client.v1.refunds.create_async(
            params={
                "payment_intent": provider_ref,
                "amount": to_minor_units(amount_micros, intent.currency.upper()),
            }
        )
        return ProviderRef(refund.id)

    async def payout(
        self, *, withdrawal_id: uuid.UUID, amount_micros: int, currency: str, destination: str
    ) -> ProviderRef:
        if not destination.startswith("acct_"):
            raise ValidationFailed(
                "With Stripe, a withdrawal's destination is a connected account id (acct_...)",
                details={"field": "destination"},
            )
        transfer = await self.client.v1.transfers.create_async(
            params={
                "amount": to_minor_units(amount_micros, currency),
                "currency": currency.lower(),
                "destination": destination,
                "metadata": {"gridex_withdrawal_id": str(withdrawal_id)},
            },
            options={"idempotency_key": f"gridex-withdrawal-{withdrawal_id}"},
        )
        return ProviderRef(transfer.id)
