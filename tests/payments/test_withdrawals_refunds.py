from __future__ import annotations

import httpx

from gridex.auth.models import Role
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from tests.factories import API, signed_in
from tests.ledger.helpers import balances, fund, topup, verify


async def _audit_actions(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> list[str]:
    logs = await client.get(f"{API}/admin/audit-logs?per_page=100", headers=admin_headers)
    return [item["action"] for item in logs.json()["items"]]


async def test_withdrawal_request_approve_and_reject(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    admin = await signed_in(client, runtime, Role.admin)
    await fund(runtime, alice.id, 10_000_000)

    first = await client.post(
        f"{API}/wallet/withdrawals",
        json={"amount": "6", "destination": "IBAN DE89 3704"},
        headers=alice.headers,
    )
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "pending"
    money = await balances(runtime, alice.id)
    assert (money.available_micros, money.reserved_micros) == (4_000_000, 6_000_000)
    too_much = await client.post(
        f"{API}/wallet/withdrawals",
        json={"amount": "4.000001", "destination": "x"},
        headers=alice.headers,
    )
    assert too_much.status_code == 409
    second = await client.post(
        f"{API}/wallet/withdrawals", json={"amount": "4", "destination": "x"}, headers=alice.headers
    )
    assert second.status_code == 201

    wid, wid2 = first.json()["id"], second.json()["id"]
    assert (
        await client.post(f"{API}/admin/withdrawals/{wid}/approve", headers=alice.headers)
    ).status_code == 403
    approved = await client.post(f"{API}/admin/withdrawals/{wid}/approve", headers=operator.headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["provider_ref"].startswith("po_")
    twice = await client.post(f"{API}/admin/withdrawals/{wid}/reject", headers=operator.headers)
    assert twice.status_code == 409
    rejected = await client.post(
        f"{API}/admin/withdrawals/{wid2}/reject", json={"reason": "KYC"}, headers=admin.headers
    )
    assert rejected.status_code == 200
    assert rejected.json()["reason"] == "KYC"
    money = await balances(runtime, alice.id)
    assert (money.available_micros, money.reserved_micros) == (4_000_000, 0)

    mine = (await client.get(f"{API}/wallet/withdrawals", headers=alice.headers)).json()
    assert {w["status"] for w in mine["items"]} == {"approved", "rejected"}
    pending = await client.get(f"{API}/admin/withdrawals?status=pending", headers=admin.headers)
    assert pending.json()["total"] == 0
    missing = await client.post(
        f"{API}/admin/withdrawals/{alice.id}/approve", headers=admin.headers
    )
    assert missing.status_code == 404
    actions = await _audit_actions(client, admin.headers)
    assert {"withdrawal.requested", "withdrawal.approved", "withdrawal.rejected"} <= set(actions)
    async with runtime.db.sessionmaker() as session:
        assert await ledger.balance_of(session, ledger.PAYOUTS) == 6_000_000
    assert (await verify(runtime)).ok


async def test_debt_blocks_withdrawals(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    async with runtime.db.sessionmaker() as session:
        await ledger.charge(
            session, at=runtime.clock.now(), user_id=alice.id, amount_micros=1, description="x"
        )
        await session.commit()
    response = await client.post(
        f"{API}/wallet/withdrawals", json={"amount": "1", "destination": "x"}, headers=alice.headers
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "INSUFFICIENT_FUNDS"


async def test_refund_whole_and_part(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    admin = await signed_in(client, runtime, Role.admin)
    intent = await topup(client, runtime, alice, "10")
    path = f"{API}/admin/payments/{intent['id']}/refund"

    assert (await client.post(path, json={"amount": "1"}, headers=alice.headers)).status_code == 403
    part = await client.post(
        path,
        json={"amount": "3", "reason": "asked"},
        headers=operator.headers | {"Idempotency-Key": "r1"},
    )
    assert part.status_code == 201, part.text
    assert part.json()["amount"] == "3.000000"
    assert part.json()["provider_ref"].startswith("re_")
    # The same refund retried with its key is not refunded twice.
    replay = await client.post(
        path,
        json={"amount": "3", "reason": "asked"},
        headers=operator.headers | {"Idempotency-Key": "r1"},
    )
    assert replay.json() == part.json()
    assert (await balances(runtime, alice.id)).available_micros == 7_000_000

    too_much = await client.post(path, json={"amount": "7.5"}, headers=operator.headers)
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "CONFLICT"

    # Alice spends (holds) 5: only 2 is available, so refunding the rest (7) is refused.
    await fund(runtime, alice.id, 0 + 1)  # 7.000001 available
    async with runtime.db.sessionmaker() as session:
        await ledger.reserve(
            session, at=runtime.clock.now(), user_id=alice.id, amount_micros=5_000_000
        )
        await session.commit()
    short = await client.post(path, json={}, headers=operator.headers)
    assert short.status_code == 409
    assert short.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    async with runtime.db.sessionmaker() as session:
        await ledger.release(
            session, at=runtime.clock.now(), user_id=alice.id, amount_micros=5_000_000
        )
        await session.commit()
    rest = await client.post(path, json={}, headers=admin.headers)
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount"] == "7.000000"
    assert (await client.post(path, json={}, headers=admin.headers)).status_code == 409
    assert (await balances(runtime, alice.id)).available_micros == 1
    topups = (await client.get(f"{API}/wallet/topups", headers=alice.headers)).json()
    assert topups["items"][0]["refunded"] == "10.000000"
    assert "payment.refunded" in await _audit_actions(client, admin.headers)
    assert (await verify(runtime)).ok


async def test_only_succeeded_payments_refund(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    admin = await signed_in(client, runtime, Role.admin)
    created = await client.post(f"{API}/wallet/topups", json={"amount": "5"}, headers=alice.headers)
    response = await client.post(
        f"{API}/admin/payments/{created.json()['id']}/refund", json={}, headers=admin.headers
    )
    assert response.status_code == 409
