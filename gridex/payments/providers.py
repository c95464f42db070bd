"""The payment-provider adapter interface, the built-in provider and Stripe-style webhook signing.

A provider creates payment intents, refunds them and pays out withdrawals; it tells Gridex that a
payment succeeded or failed only through the signed webhook ``POST /api/v1/payments/webhook``.
Signature header: ``Gridex-Signature: t=<unix seconds>,v1=<hex>`` where hex is
HMAC-SHA256(secret, ``"<t>.<raw body>"``), as Stripe does it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

SIGNATURE_HEADER = "Gridex-Signature"


@dataclass(frozen=True, slots=True)
class ProviderIntent:
    provider_ref: str
    client_secret: str


@dataclass(frozen=True, slots=True)
class ProviderRef:
    provider_ref: str


class PaymentProvider(Protocol):
    name: str

    async def create_intent(
        self, *, intent_id: uuid.UUID, amount_micros: int, currency: str
    ) -> ProviderIntent:
        """Open a payment for the client to complete; it confirms through the webhook."""
        ...

    async def refund(self, *, provider_ref: str, amount_micros: int) -> ProviderRef:
        """Give back part or all of a succeeded payment."""
        ...

    async def payout(
        self, *, withdrawal_id: uuid.UUID, amount_micros: int, currency: str, destination: str
    ) -> ProviderRef:
        """Send an approved withdrawal to its destination."""
        ...


class BuiltinProvider:
    """Gridex's own provider: it keeps no state of its own and never fails; payments complete
    through a webhook signed with the deployment's secret (by the real payer's integration, or by
    ``gridex payments complete`` / the admin endpoint outside production)."""

    name = "builtin"

    async def create_intent(
        self, *, intent_id: uuid.UUID, amount_micros: int, currency: str
    ) -> ProviderIntent:
        ref = f"pi_{intent_id.hex}"
        return ProviderIntent(ref, f"{ref}_secret_{secrets.token_urlsafe(24)}")

    async def refund(self, *, provider_ref: str, amount_micros: int) -> ProviderRef:
        return ProviderRef(f"re_{uuid.uuid4().hex}")

    async def payout(
        self, *, withdrawal_id: uuid.UUID, amount_micros: int, currency: str, destination: str
    ) -> ProviderRef:
        return ProviderRef(f"po_{withdrawal_id.hex}")


_PROVIDERS: dict[str, PaymentProvider] = {"builtin": BuiltinProvider()}


def register_provider(provider: PaymentProvider) -> None:
    """Make another adapter selectable with ``GRIDEX_PAYMENT_PROVIDER``."""
    _PROVIDERS[provider.name] = provider


def get_provider(name: str) -> PaymentProvider:
    try:
        return _PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown payment provider {name!r}") from None


# --- webhook signatures --------------------------------------------------------------------


class SignatureError(ValueError):
    pass


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, at: datetime) -> str:
    """The ``Gridex-Signature`` header value for ``body`` sent at ``at``."""
    timestamp = int(at.timestamp())
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(secret: str, body: bytes, header: str | None, *, now: datetime, tolerance: int) -> None:
    """Raise ``SignatureError`` unless one ``v1`` signature matches and ``t`` is within
    ``tolerance`` seconds of ``now`` (either way: replays and clock skew)."""
    if not secret:
        raise SignatureError("no webhook secret is configured")
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed timestamp") from None
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("header needs t= and v1=")
    expected = _digest(secret, timestamp, body)
    # Compare against every candidate without short-circuiting (constant time for each).
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no matching signature")
    if abs(now.timestamp() - timestamp) > tolerance:
        raise SignatureError("timestamp outside the tolerance")
