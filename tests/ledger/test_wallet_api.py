from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.models import ReferenceType
from tests.factories import API, login, signed_in
from tests.ledger.helpers import fund, topup


async def test_wallet_requires_a_user(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{API}/wallet")).status_code == 401


async def test_transactions_filters_and_pagination(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    alice = await signed_in(client, runtime)
    bob = await signed_in(client, runtime)
    start = clock.now()
    await topup(client, runtime, alice, "10")
    clock.advance(timedelta(minutes=1))
    async with runtime.db.sessionmaker() as session:
        for _ in range(3):
            await ledger.reserve(
                session,
                at=clock.now(),
                user_id=alice.id,
                amount_micros=1_000_000,
                reference=ledger.Reference(ReferenceType.order, uuid.uuid4()),
            )
        await session.commit()
    await topup(client, runtime, bob, "1")

    page = await client.get(f"{API}/wallet/transactions?per_page=2", headers=alice.headers)
    body = page.json()
    assert (body["total"], body["pages"], len(body["items"])) == (4, 2, 2)
    assert body["items"][0]["type"] == "order_reserve"
    assert body["items"][0]["amount"] == "0.000000"
    assert {p["account"] for p in body["items"][0]["postings"]} == {"available", "reserved"}
    second = await client.get(f"{API}/wallet/transactions?per_page=2&page=2", headers=alice.headers)
    assert [i["type"] for i in second.json()["items"]] == ["order_reserve", "topup"]

    topups = await client.get(f"{API}/wallet/transactions?type=topup", headers=alice.headers)
    assert topups.json()["total"] == 1
    since = (start + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    later = await client.get(
        f"{API}/wallet/transactions", params={"from": since}, headers=alice.headers
    )
    assert later.json()["total"] == 3
    until = await client.get(
        f"{API}/wallet/transactions", params={"to": since}, headers=alice.headers
    )
    assert until.json()["total"] == 1
    naive = await client.get(
        f"{API}/wallet/transactions", params={"from": "2025-01-01T00:00:00"}, headers=alice.headers
    )
    assert naive.status_code == 422

    wallet = (await client.get(f"{API}/wallet", headers=alice.headers)).json()
    assert wallet == {
        "currency": "USD",
        "available": "7.000000",
        "reserved": "3.000000",
        "escrow_pending": "0.000000",
        "energy_tokens_kwh": None,
        "chain_address": None,
        "linked_wallet": None,
    }


async def test_daily_statements_chain_day_to_day(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(datetime(2026, 3, 1, 12, tzinfo=UTC))
    alice = await signed_in(client, runtime)
    await fund(runtime, alice.id, 10_000_000)
    clock.set(datetime(2026, 3, 3, 8, tzinfo=UTC))
    async with runtime.db.sessionmaker() as session:
        await ledger.reserve(session, at=clock.now(), user_id=alice.id, amount_micros=4_000_000)
        await ledger.capture(session, at=clock.now(), user_id=alice.id, amount_micros=1_500_000)
        await session.commit()
    clock.set(datetime(2026, 3, 3, 23, 59, 59, tzinfo=UTC))
    await fund(runtime, alice.id, 500_000)
    await login(client, alice)

    one = await client.get(f"{API}/wallet/statements?date=2026-03-02", headers=alice.headers)
    assert one.status_code == 200, one.text
    [quiet] = one.json()
    assert (
        quiet["opening"]
        == quiet["closing"]
        == {
            "available": "10.000000",
            "reserved": "0.000000",
            "total": "10.000000",
        }
    )
    assert quiet["movements"] == []

    many = await client.get(
        f"{API}/wallet/statements?from=2026-02-28&to=2026-03-04", headers=alice.headers
    )
    days = many.json()
    assert [d["date"] for d in days] == [
        f"2026-0{m}-{d:02d}" for m, d in ((2, 28), (3, 1), (3, 2), (3, 3), (3, 4))
    ]
    for before, after in itertools.pairwise(days):
        assert before["closing"] == after["opening"]
    march3 = days[3]
    assert march3["opening"]["total"] == "10.000000"
    assert march3["closing"] == {
        "available": "6.500000",
        "reserved": "2.500000",
        "total": "9.000000",
    }
    # Entries at the same instant come in id order; compare without that order.
    assert sorted(m["type"] for m in march3["movements"]) == [
        "order_reserve",
        "topup",
        "trade_capture",
    ]
    assert march3["debits"] == "1.500000"
    assert march3["credits"] == "0.500000"
    assert days[0]["opening"]["total"] == "0.000000"

    bad = await client.get(
        f"{API}/wallet/statements?from=2026-03-04&to=2026-03-01", headers=alice.headers
    )
    assert bad.status_code == 422
    both = await client.get(
        f"{API}/wallet/statements?date=2026-03-04&to=2026-03-05", headers=alice.headers
    )
    assert both.status_code == 422


async def test_trial_balance_is_admin_only_and_zero(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    admin = await signed_in(client, runtime, Role.admin)
    await topup(client, runtime, alice, "10")
    await client.post(
        f"{API}/wallet/withdrawals", json={"amount": "4", "destination": "x"}, headers=alice.headers
    )
    assert (
        await client.get(f"{API}/admin/ledger/trial-balance", headers=alice.headers)
    ).status_code == 403
    assert (
        await client.get(f"{API}/admin/ledger/trial-balance", headers=operator.headers)
    ).status_code == 403
    response = await client.get(f"{API}/admin/ledger/trial-balance", headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == "0.000000"
    assert body["platform"]["deposits"] == "-10.000000"
    assert body["users_available"] == "6.000000"
    assert body["users_reserved"] == "4.000000"
    assert len(body["accounts"]) == 3
