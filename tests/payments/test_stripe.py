"""The Stripe adapter: Stripe's real event shapes on the webhook, signed and checked with the
``stripe`` library's own ``WebhookSignature``; its API calls go to an HTTP double that answers
as Stripe does (no network in tests)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
import stripe

from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.payments import service, stripe_provider
from gridex.payments.providers import sign
from gridex.payments.stripe_provider import StripeProvider
from tests.factories import API, Account, signed_in
from tests.ledger.helpers import balances, signed, succeeded_event

WHSEC = "whsec_test_" + "a" * 32


class StripeDouble(stripe.HTTPClient):
    """Answers Stripe API calls as Stripe would, and keeps them for the assertions."""

    name = "double"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    async def request_async(
        self, method: str, url: str, headers: Any, post_data: Any = None
    ) -> tuple[bytes, int, dict[str, str]]:
        form = dict(parse_qsl(post_data or ""))
        self.calls.append((method, url, form))
        path = url.removeprefix("https://api.stripe.com")
        if path == "/v1/payment_intents":
            n = len(self.calls)
            body = {
                "id": f"pi_{n}",
                "object": "payment_intent",
                "client_secret": f"pi_{n}_secret_x",
                "amount": int(form["amount"]),
                "currency": form["currency"],
            }
        elif path.startswith("/v1/payment_intents/"):
            body = {"id": path.rsplit("/", 1)[1], "object": "payment_intent", "currency": "usd"}
        elif path == "/v1/refunds":
            body = {"id": "re_1", "object": "refund", "amount": int(form["amount"])}
        else:
            return b'{"error": {"message": "unknown"}}', 404, {}
        return json.dumps(body).encode(), 200, {}

    async def close_async(self) -> None:
        return None

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        return None


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {
        "payment_provider": "stripe",
        "stripe_api_key": "sk_test_double",
        "stripe_webhook_secret": WHSEC,
    }


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[StripeDouble]:
    http = StripeDouble()
    client = stripe.StripeClient("sk_test_double", http_client=http)
    monkeypatch.setattr(StripeProvider, "with_key", classmethod(lambda cls, key: cls(client)))
    service._stripe.cache_clear()
    yield http
    service._stripe.cache_clear()


def _stripe_signed(body: bytes, at: int, secret: str = WHSEC) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, at)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": 1772625600,
            "livemode": False,
            "pending_webhooks": 1,
            "type": kind,
            "data": {"object": obj},
        }
    )


async def _topup(client: httpx.AsyncClient, account: Account, amount: str) -> dict[str, Any]:
    created = await client.post(
        f"{API}/wallet/topups", json={"amount": amount}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    intent: dict[str, Any] = created.json()
    return intent


async def test_payment_intent_succeeded_credits_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, double: StripeDouble
) -> None:
    alice = await signed_in(client, runtime)
    intent = await _topup(client, alice, "12.34")
    assert intent["provider"] == "stripe"
    method, url, form = double.calls[0]
    assert (method, url) == ("post", "https://api.stripe.com/v1/payment_intents")
    assert form["amount"] == "1234"  # cents
    assert form["currency"] == "usd"
    assert form["metadata[gridex_payment_id]"] == intent["id"]
    assert intent["client_secret"] == "pi_1_secret_x"

    body = _event(
        "payment_intent.succeeded",
        {
            "id": "pi_1",
            "object": "payment_intent",
            "amount": 1234,
            "amount_received": 1234,
            "currency": "usd",
            "status": "succeeded",
            "metadata": {"gridex_payment_id": intent["id"]},
        },
    )
    now = int(clock.now().timestamp())
    headers = _stripe_signed(body, now)
    done = await client.post(f"{API}/payments/webhook", content=body, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json() == {"received": True, "duplicate": False, "outcome": "credited"}
    again = await client.post(f"{API}/payments/webhook", content=body, headers=headers)
    assert again.json()["duplicate"] is True
    assert (await balances(runtime, alice.id)).available_micros == 12_340_000


async def test_checkout_session_completed_credits_when_paid(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, double: StripeDouble
) -> None:
    bob = await signed_in(client, runtime)
    intent = await _topup(client, bob, "5")
    session_obj = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "payment",
        "payment_intent": "pi_1",
        "client_reference_id": intent["id"],
        "amount_total": 500,
        "currency": "usd",
        "payment_status": "unpaid",
        "status": "complete",
    }
    now = int(clock.now().timestamp())
    # Completed but not paid yet (a delayed payment method): nothing is credited.
    unpaid = _event("checkout.session.completed", session_obj)
    first = await client.post(
        f"{API}/payments/webhook", content=unpaid, headers=_stripe_signed(unpaid, now)
    )
    assert first.json()["outcome"] == "ignored"
    assert (await balances(runtime, bob.id)).available_micros == 0
    paid = _event(
        "checkout.session.async_payment_succeeded", {**session_obj, "payment_status": "paid"}
    )
    second = await client.post(
        f"{API}/payments/webhook", content=paid, headers=_stripe_signed(paid, now)
    )
    assert second.json()["outcome"] == "credited", second.text
    assert (await balances(runtime, bob.id)).available_micros == 5_000_000

    # A plain paid checkout.session.completed for another top-up.
    other = await _topup(client, bob, "2.50")
    completed = _event(
        "checkout.session.completed",
        {
            **session_obj,
            "id": "cs_test_2",
            "payment_intent": "pi_2",
            "client_reference_id": other["id"],
            "amount_total": 250,
            "payment_status": "paid",
        },
    )
    third = await client.post(
        f"{API}/payments/webhook", content=completed, headers=_stripe_signed(completed, now)
    )
    assert third.json()["outcome"] == "credited", third.text
    assert (await balances(runtime, bob.id)).available_micros == 7_500_000


async def test_forged_stale_or_mismatched_events_change_nothing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, double: StripeDouble
) -> None:
    carol = await signed_in(client, runtime)
    intent = await _topup(client, carol, "3")
    obj = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 300,
        "amount_received": 300,
        "currency": "usd",
    }
    body = _event("payment_intent.succeeded", obj)
    now = int(clock.now().timestamp())
    for headers in (
        _stripe_signed(body, now, secret="whsec_someone_else"),
        _stripe_signed(body, now - 600),  # older than the 5 minute tolerance
        {"Stripe-Signature": f"t={now},v1={'0' * 64}"},
    ):
        refused = await client.post(f"{API}/payments/webhook", content=body, headers=headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "INVALID_SIGNATURE"
    # Signed right but for another amount: refused, and the intent stays pending.
    short = _event("payment_intent.succeeded", {**obj, "amount_received": 100})
    wrong = await client.post(
        f"{API}/payments/webhook", content=short, headers=_stripe_signed(short, now)
    )
    assert wrong.status_code == 422
    # An event of the account's other business: acknowledged and ignored.
    unrelated = _event("payment_intent.succeeded", {**obj, "id": "pi_not_ours"})
    ignored = await client.post(
        f"{API}/payments/webhook", content=unrelated, headers=_stripe_signed(unrelated, now)
    )
    assert ignored.json()["outcome"] == "ignored"
    # A Gridex-signed (built-in provider) event cannot complete a Stripe top-up by its id.
    builtin, builtin_headers = signed(runtime, succeeded_event(intent))
    other_path = await client.post(
        f"{API}/payments/webhook", content=builtin, headers=builtin_headers
    )
    assert other_path.status_code == 404, other_path.text
    assert (await balances(runtime, carol.id)).available_micros == 0
    listed = await client.get(f"{API}/wallet/topups", headers=carol.headers)
    assert [(t["id"], t["status"]) for t in listed.json()["items"]] == [(intent["id"], "pending")]


def test_gridex_signatures_verify_with_the_stripe_library() -> None:
    """Both directions: Gridex's signer is Stripe's scheme, checked by Stripe's own code."""
    body = _event("payment_intent.succeeded", {"id": "pi_x", "object": "payment_intent"})
    from datetime import UTC, datetime

    at = datetime.now(UTC)
    header = sign(WHSEC, body, at)
    assert stripe.WebhookSignature.verify_header(body.decode(), header, WHSEC, tolerance=300)
    event = stripe.Webhook.construct_event(body.decode(), header, WHSEC)
    assert event.type == "payment_intent.succeeded"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            body.decode(), sign(WHSEC, body, at - timedelta(minutes=10)), WHSEC, tolerance=300
        )


def test_minor_units() -> None:
    assert stripe_provider.to_minor_units(12_340_000, "USD") == 1234
    assert stripe_provider.to_minor_units(5_000_000, "JPY") == 5
    assert stripe_provider.to_minor_units(1_234_000, "KWD") == 1234
    with pytest.raises(Exception, match="minor units"):
        stripe_provider.to_minor_units(1_234_500, "USD")


async def test_refund_goes_through_stripe(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, double: StripeDouble
) -> None:
    dave = await signed_in(client, runtime)
    intent = await _topup(client, dave, "10")
    body = _event(
        "payment_intent.succeeded",
        {
            "id": "pi_1",
            "object": "payment_intent",
            "amount_received": 1000,
            "currency": "usd",
        },
    )
    now = int(clock.now().timestamp())
    await client.post(f"{API}/payments/webhook", content=body, headers=_stripe_signed(body, now))
    from gridex.auth.models import Role

    operator = await signed_in(client, runtime, Role.operator)
    refunded = await client.post(
        f"{API}/admin/payments/{intent['id']}/refund",
        json={"amount": "2.50"},
        headers=operator.headers,
    )
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["provider_ref"] == "re_1"
    _, url, form = double.calls[-1]
    assert url == "https://api.stripe.com/v1/refunds"
    assert form == {"payment_intent": "pi_1", "amount": "250"}
    assert (await balances(runtime, dave.id)).available_micros == 7_500_000
