from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.factories import API, signed_in
from tests.ledger.helpers import balances, signed, succeeded_event, topup, verify

WEBHOOK = f"{API}/payments/webhook"


async def _intent(client: httpx.AsyncClient, headers: dict[str, str], amount: str) -> dict:
    response = await client.post(f"{API}/wallet/topups", json={"amount": amount}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_topup_is_credited_once_by_a_valid_webhook(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    intent = await _intent(client, alice.headers, "25.5")
    assert intent["status"] == "pending"
    assert intent["provider"] == "builtin"
    assert intent["client_secret"].startswith("pi_")
    assert intent["amount"] == "25.500000"
    assert (await client.get(f"{API}/wallet", headers=alice.headers)).json()["available"] == (
        "0.000000"
    )

    event = succeeded_event(intent)
    body, headers = signed(runtime, event)
    first = await client.post(WEBHOOK, content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "duplicate": False, "outcome": "credited"}

    # The provider retries the very same delivery: nothing more is credited.
    replay = await client.post(WEBHOOK, content=body, headers=headers)
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    # Another event for the same intent does not credit twice either.
    body2, headers2 = signed(runtime, succeeded_event(intent))
    again = await client.post(WEBHOOK, content=body2, headers=headers2)
    assert again.json()["outcome"] == "ignored"

    wallet = (await client.get(f"{API}/wallet", headers=alice.headers)).json()
    assert wallet["available"] == "25.500000"
    assert wallet["energy_tokens_kwh"] is None
    assert wallet["chain_address"] is None
    topups = (await client.get(f"{API}/wallet/topups", headers=alice.headers)).json()
    assert topups["items"][0]["status"] == "succeeded"
    assert "client_secret" not in topups["items"][0]
    assert (await verify(runtime)).ok


@pytest.mark.parametrize(
    "tamper",
    ["wrong_secret", "wrong_body", "missing", "malformed", "stale", "future"],
)
async def test_bad_signatures_are_400_and_change_nothing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, tamper: str
) -> None:
    alice = await signed_in(client, runtime)
    intent = await _intent(client, alice.headers, "10")
    body, headers = signed(runtime, succeeded_event(intent))
    if tamper == "wrong_secret":
        from gridex.payments import providers

        headers["Gridex-Signature"] = providers.sign("not-the-secret", body, clock.now())
    elif tamper == "wrong_body":
        body = body.replace(b'"10.000000"', b'"99.000000"')
    elif tamper == "missing":
        del headers["Gridex-Signature"]
    elif tamper == "malformed":
        headers["Gridex-Signature"] = "v1=abc"
    elif tamper == "stale":
        body, headers = signed(
            runtime, succeeded_event(intent), at=clock.now() - timedelta(seconds=301)
        )
    else:
        body, headers = signed(
            runtime, succeeded_event(intent), at=clock.now() + timedelta(seconds=301)
        )
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_SIGNATURE"
    assert (await balances(runtime, alice.id)).available_micros == 0
    topups = (await client.get(f"{API}/wallet/topups", headers=alice.headers)).json()
    assert topups["items"][0]["status"] == "pending"


async def test_signature_within_tolerance_is_accepted(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    alice = await signed_in(client, runtime)
    intent = await _intent(client, alice.headers, "1")
    body, headers = signed(
        runtime, succeeded_event(intent), at=clock.now() - timedelta(seconds=299)
    )
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_failed_payment_credits_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    intent = await _intent(client, alice.headers, "7")
    event = succeeded_event(intent) | {"type": "payment_intent.failed"}
    body, headers = signed(runtime, event)
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.json()["outcome"] == "failed"
    # A late success after the failure does not credit.
    body, headers = signed(runtime, succeeded_event(intent))
    assert (await client.post(WEBHOOK, content=body, headers=headers)).json()["outcome"] == (
        "ignored"
    )
    assert (await balances(runtime, alice.id)).available_micros == 0


async def test_amount_mismatch_and_unknown_intent(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    intent = await _intent(client, alice.headers, "7")
    body, headers = signed(runtime, succeeded_event(intent | {"amount": "70"}))
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 422
    unknown = succeeded_event(intent | {"id": "6f1c5a52-4a0e-4d4b-9a57-3f4a0c1e7d21"})
    body, headers = signed(runtime, unknown)
    assert (await client.post(WEBHOOK, content=body, headers=headers)).status_code == 404
    body, headers = signed(runtime, {"id": "evt_x"})
    assert (await client.post(WEBHOOK, content=body, headers=headers)).status_code == 422
    assert (await balances(runtime, alice.id)).available_micros == 0


async def test_operator_completes_intent_in_development(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    intent = await _intent(client, alice.headers, "12")
    path = f"{API}/admin/payments/{intent['id']}/complete"
    assert (await client.post(path, headers=alice.headers)).status_code == 403
    done = await client.post(path, headers=operator.headers)
    assert done.status_code == 200, done.text
    assert done.json()["outcome"] == "credited"
    again = await client.post(path, headers=operator.headers)
    assert again.json()["outcome"] == "ignored"
    assert (await balances(runtime, alice.id)).available_micros == 12_000_000


@pytest.mark.parametrize("settings_overrides", [{"env": "production"}])
async def test_completion_by_hand_is_refused_in_production(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    admin = await signed_in(client, runtime, Role.admin)
    intent = await _intent(client, alice.headers, "12")
    response = await client.post(
        f"{API}/admin/payments/{intent['id']}/complete", headers=admin.headers
    )
    assert response.status_code == 403
    # And without a configured secret, production accepts no webhook at all.
    body, headers = signed(runtime, succeeded_event(intent))
    assert (await client.post(WEBHOOK, content=body, headers=headers)).status_code == 400
    assert (await balances(runtime, alice.id)).available_micros == 0


async def test_topup_helper_and_history(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    intent = await topup(client, runtime, alice, "3")
    history = (await client.get(f"{API}/wallet/transactions", headers=alice.headers)).json()
    assert history["total"] == 1
    item = history["items"][0]
    assert item["type"] == "topup"
    assert item["amount"] == "3.000000"
    assert item["reference_type"] == "payment"
    assert item["reference_id"] == intent["id"]
    assert item["postings"] == [
        {"account": "available", "amount": "3.000000", "balance_after": "3.000000"}
    ]
