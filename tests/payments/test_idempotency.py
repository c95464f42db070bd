from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from gridex.core.clock import FrozenClock
from gridex.core.idempotency import IdempotencyKey, fingerprint
from gridex.core.runtime import Runtime
from gridex.payments.models import PaymentIntent, Withdrawal
from tests.factories import API, login, signed_in
from tests.ledger.helpers import balances, fund

TOPUPS = f"{API}/wallet/topups"
WITHDRAWALS = f"{API}/wallet/withdrawals"


async def _count(rt: Runtime, model: type[PaymentIntent] | type[Withdrawal]) -> int:
    async with rt.db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_same_key_and_body_replays_the_stored_response(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    headers = alice.headers | {"Idempotency-Key": "topup-1"}
    first = await client.post(TOPUPS, json={"amount": "10"}, headers=headers)
    assert first.status_code == 201
    # Same content, other formatting: still the same request.
    second = await client.post(
        TOPUPS,
        content=b'{ "amount" : "10" }',
        headers=headers | {"Content-Type": "application/json"},
    )
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await _count(runtime, PaymentIntent) == 1


async def test_same_key_other_body_is_a_conflict(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    headers = alice.headers | {"Idempotency-Key": "k"}
    assert (await client.post(TOPUPS, json={"amount": "10"}, headers=headers)).status_code == 201
    other = await client.post(TOPUPS, json={"amount": "11"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    # Another route with the same key is another request too.
    await fund(runtime, alice.id, 5_000_000)
    withdraw = await client.post(
        WITHDRAWALS, json={"amount": "1", "destination": "IBAN"}, headers=headers
    )
    assert withdraw.status_code == 422
    assert await _count(runtime, PaymentIntent) == 1
    assert await _count(runtime, Withdrawal) == 0


async def test_retry_while_in_flight_is_409(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    alice = await signed_in(client, runtime)
    body = b'{"amount":"10"}'
    # The first request claimed the key and is still running (its claim is committed).
    async with runtime.db.sessionmaker() as session:
        session.add(
            IdempotencyKey(
                principal=f"user:{alice.id}",
                key="busy",
                fingerprint=fingerprint("POST", TOPUPS, body),
                status="in_progress",
                claim_token=uuid.uuid4(),
                claimed_at=clock.now(),
                expires_at=clock.now() + timedelta(hours=24),
            )
        )
        await session.commit()
    headers = alice.headers | {"Idempotency-Key": "busy", "Content-Type": "application/json"}
    busy = await client.post(TOPUPS, content=body, headers=headers)
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert await _count(runtime, PaymentIntent) == 0
    # A claim older than the lease belongs to a request that died before committing: taken over.
    clock.advance(timedelta(seconds=runtime.settings.idempotency_lease_seconds + 1))
    taken = await client.post(TOPUPS, content=body, headers=headers)
    assert taken.status_code == 201
    assert await _count(runtime, PaymentIntent) == 1


async def test_failed_work_releases_the_key(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    headers = alice.headers | {"Idempotency-Key": "w-1"}
    payload = {"amount": "4", "destination": "IBAN DE00"}
    poor = await client.post(WITHDRAWALS, json=payload, headers=headers)
    assert poor.status_code == 409
    assert poor.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    await fund(runtime, alice.id, 4_000_000)
    ok = await client.post(WITHDRAWALS, json=payload, headers=headers)
    assert ok.status_code == 201, ok.text
    again = await client.post(WITHDRAWALS, json=payload, headers=headers)
    assert again.status_code == 201
    assert again.json() == ok.json()
    assert await _count(runtime, Withdrawal) == 1
    money = await balances(runtime, alice.id)
    assert (money.available_micros, money.reserved_micros) == (0, 4_000_000)
    # An invalid body does not hold the key either.
    bad = await client.post(
        TOPUPS, json={"amount": "-1"}, headers=alice.headers | {"Idempotency-Key": "b"}
    )
    assert bad.status_code == 422
    good = await client.post(
        TOPUPS, json={"amount": "1"}, headers=alice.headers | {"Idempotency-Key": "b"}
    )
    assert good.status_code == 201


async def test_keys_are_scoped_per_principal_and_expire(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    alice = await signed_in(client, runtime)
    bob = await signed_in(client, runtime)
    key = {"Idempotency-Key": "shared"}
    a = await client.post(TOPUPS, json={"amount": "1"}, headers=alice.headers | key)
    b = await client.post(TOPUPS, json={"amount": "1"}, headers=bob.headers | key)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    clock.advance(timedelta(hours=24, seconds=1))
    await login(client, alice)  # the access token expired too
    c = await client.post(TOPUPS, json={"amount": "1"}, headers=alice.headers | key)
    assert c.status_code == 201
    assert c.json()["id"] != a.json()["id"]
    assert "Idempotent-Replayed" not in c.headers
    assert await _count(runtime, PaymentIntent) == 3


async def test_without_a_key_every_post_runs(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    for _ in range(2):
        assert (
            await client.post(TOPUPS, json={"amount": "1"}, headers=alice.headers)
        ).status_code == 201
    assert await _count(runtime, PaymentIntent) == 2
    bad_key = await client.post(
        TOPUPS, json={"amount": "1"}, headers=alice.headers | {"Idempotency-Key": "x" * 256}
    )
    assert bad_key.status_code == 422
