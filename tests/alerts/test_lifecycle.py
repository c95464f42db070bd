"""The alert lifecycle over HTTP: acknowledge, resolve, bulk acknowledge, summary, stats,
unresolved and analytics; staff-only alerts; overdue invoices through the billing plug."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from gridex.alerts.models import AlertType, Severity, SubjectKind
from gridex.alerts.service import Condition, raise_alert
from gridex.auth.models import Role
from gridex.chain.models import ChainMismatch
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.meters.jobs import mark_offline
from tests.alerts.helpers import alerts_of, notifications_of, run_jobs, send
from tests.factories import API, Account, signed_in
from tests.meters.helpers import NOW, make_meter, reading


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"access_token_minutes": 24 * 60}


async def offline_meters(
    client: httpx.AsyncClient, rt: Runtime, clock: FrozenClock, owner: Account, count: int
) -> list[dict[str, Any]]:
    """``count`` meters of ``owner`` that reported at NOW and went offline 46 minutes later,
    with their ``device_offline`` alerts raised."""
    clock.set(NOW)
    for _ in range(count):
        meter = await make_meter(client, owner)
        await send(client, owner, meter, reading(NOW))
    clock.set(NOW + timedelta(minutes=46))
    assert await mark_offline(rt) == count
    await run_jobs(rt)
    alerts = await alerts_of(client, owner)
    assert len(alerts) == count
    return alerts


async def post(client: httpx.AsyncClient, who: Account, path: str, **body: Any) -> httpx.Response:
    return await client.post(f"{API}{path}", headers=who.headers, json=body or None)


async def test_acknowledge_then_resolve_with_who_and_when(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    owner = await signed_in(client, runtime)
    [alert] = await offline_meters(client, runtime, clock, owner, 1)
    clock.set(NOW + timedelta(minutes=50))
    acked = await post(client, owner, f"/alerts/{alert['id']}/acknowledge")
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == str(owner.id)
    assert acked.json()["acknowledged_at"] == utc_iso(NOW + timedelta(minutes=50))
    again = await post(client, owner, f"/alerts/{alert['id']}/acknowledge")
    assert again.json()["acknowledged_at"] == utc_iso(NOW + timedelta(minutes=50))

    operator = await signed_in(client, runtime, Role.operator, region="north")
    clock.set(NOW + timedelta(minutes=70))
    resolved = await post(client, operator, f"/alerts/{alert['id']}/resolve", note="cable fixed")
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["resolved_by"], body["note"]) == (
        "resolved",
        str(operator.id),
        "cable fixed",
    )
    assert body["auto_resolved"] is False
    for action in ("acknowledge", "resolve"):
        late = await post(client, owner, f"/alerts/{alert['id']}/{action}")
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "CONFLICT"
    missing = await post(client, owner, f"/alerts/{uuid.uuid4()}/resolve")
    assert missing.status_code == 404
    too_long = await post(client, operator, f"/alerts/{alert['id']}/resolve", note="x" * 1001)
    assert too_long.status_code == 422


async def test_operator_views_bulk_acknowledge_summary_and_analytics(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    owner = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator, region="north")
    south_owner = await signed_in(client, runtime, region="south")
    alerts = await offline_meters(client, runtime, clock, owner, 3)
    ids = [a["id"] for a in alerts]

    # A south alert: outside the north operator's region.
    clock.set(NOW)
    south_meter = await make_meter(client, south_owner, region="south")
    await send(client, south_owner, south_meter, reading(NOW))
    clock.set(NOW + timedelta(minutes=46))
    await mark_offline(runtime)
    await run_jobs(runtime)
    [south_alert] = await alerts_of(client, south_owner)

    # Owners cannot use the staff views.
    assert (await client.get(f"{API}/alerts/unresolved", headers=owner.headers)).status_code == 403
    refused = await post(client, owner, "/alerts/bulk-acknowledge", ids=ids)
    assert refused.status_code == 403

    # All or nothing: an id outside the operator's region is 404 and acknowledges nothing.
    clock.set(NOW + timedelta(minutes=56))
    mixed = await post(client, operator, "/alerts/bulk-acknowledge", ids=[*ids, south_alert["id"]])
    assert mixed.status_code == 404
    assert mixed.json()["error"]["details"]["ids"] == [south_alert["id"]]
    assert {a["status"] for a in await alerts_of(client, owner)} == {"open"}

    await post(client, operator, f"/alerts/{ids[0]}/resolve")
    bulk = await post(client, operator, "/alerts/bulk-acknowledge", ids=[*ids[1:], ids[0]])
    assert bulk.status_code == 200, bulk.text
    assert bulk.json() == {"acknowledged": ids[1:], "skipped": [ids[0]]}

    unresolved = await client.get(f"{API}/alerts/unresolved", headers=operator.headers)
    assert unresolved.status_code == 200
    assert sorted(a["id"] for a in unresolved.json()["items"]) == sorted(ids[1:])

    summary = await client.get(f"{API}/alerts/summary", headers=operator.headers)
    assert summary.json() == {
        "open": 0,
        "acknowledged": 2,
        "unresolved": 2,
        "by_severity": {"info": 0, "warning": 2, "critical": 0},
        "by_type": {"device_offline": 2},
        "oldest_unresolved_at": utc_iso(NOW + timedelta(minutes=46)),
    }
    own_summary = await client.get(f"{API}/alerts/summary", headers=south_owner.headers)
    assert own_summary.json()["open"] == 1

    stats = await client.get(
        f"{API}/alerts/stats",
        params={"from": utc_iso(NOW), "to": utc_iso(NOW + timedelta(hours=1))},
        headers=operator.headers,
    )
    assert stats.status_code == 200, stats.text
    assert stats.json()["raised"] == 3
    assert stats.json()["by_status"] == {"open": 0, "acknowledged": 2, "resolved": 1}
    bad = await client.get(
        f"{API}/alerts/stats",
        params={"from": utc_iso(NOW), "to": utc_iso(NOW)},
        headers=operator.headers,
    )
    assert bad.status_code == 422

    analytics = await client.get(f"{API}/alerts/analytics", headers=operator.headers)
    assert analytics.status_code == 200, analytics.text
    body = analytics.json()
    assert body["total"] == 3
    assert body["by_region"] == {"north": 3}
    [row] = body["by_type"]
    assert (row["type"], row["count"], row["acknowledged"], row["resolved"]) == (
        "device_offline",
        3,
        2,
        1,
    )
    # Raised at 12:46; two acknowledged at 12:56 (600 s); one resolved at 12:56 (600 s).
    assert row["mean_time_to_acknowledge_seconds"] == 600.0
    assert row["mean_time_to_resolve_seconds"] == 600.0

    admin = await signed_in(client, runtime, Role.admin, region=None)
    everything = await client.get(f"{API}/alerts/analytics", headers=admin.headers)
    assert everything.json()["by_region"] == {"north": 3, "south": 1}
    filtered = await alerts_of(client, admin, region="south", type="device_offline", status="open")
    assert [a["id"] for a in filtered] == [south_alert["id"]]


async def test_chain_mismatch_is_for_staff_only(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    admin = await signed_in(client, runtime, Role.admin, region=None)
    # What reconciliation records when ledger and chain disagree with an empty outbox.
    async with runtime.db.sessionmaker() as session:
        session.add(
            ChainMismatch(
                account=str(owner.id), ledger_micros=5_000_000, chain_micros=4_000_000, found_at=NOW
            )
        )
        await session.commit()
    await run_jobs(runtime)
    await run_jobs(runtime)
    [alert] = await alerts_of(client, admin, type="chain_mismatch")
    assert alert["severity"] == "critical"
    assert alert["subject"] == {"kind": "user", "id": str(owner.id)}
    assert alert["details"]["difference"] == "-1.000000"
    assert alert["occurrences"] == 1
    assert await alerts_of(client, owner) == []
    response = await client.get(f"{API}/alerts/{alert['id']}", headers=owner.headers)
    assert response.status_code == 404
    assert [n["type"] for n in await notifications_of(client, admin)] == ["chain_mismatch"]


async def test_two_workers_raising_the_same_condition_make_one_alert(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    condition = Condition(
        AlertType.low_balance,
        Severity.critical,
        SubjectKind.user,
        str(owner.id),
        "in debt",
        user_id=owner.id,
        region="north",
    )

    async def worker() -> bool:
        async with runtime.db.sessionmaker() as session:
            raised = await raise_alert(session, runtime, condition)
            await asyncio.sleep(0.05)  # both transactions are open at once
            await session.commit()
            return raised is not None

    outcomes = await asyncio.gather(worker(), worker())
    assert sorted(outcomes) == [False, True]
    [alert] = await alerts_of(client, owner)
    assert alert["occurrences"] == 2
    assert len(await notifications_of(client, owner)) == 1
