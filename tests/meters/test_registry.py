from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select

from gridex.audit.models import AuditLog
from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.factories import API, login, make_user, signed_in
from tests.meters.helpers import at_now, make_key, make_meter, quarters, reading


async def test_register_own_and_for_others(client: httpx.AsyncClient, runtime: Runtime) -> None:
    prosumer = await signed_in(client, runtime)
    other = await make_user(runtime)
    meter = await make_meter(
        client,
        prosumer,
        serial="SM_ENG_001_2025",
        location={"building": "ENG", "room": "101", "latitude": 13.7, "longitude": 100.5},
        capacity_kw=5.5,
        installation_date="2025-01-15",
        metadata={"vendor": "acme"},
    )
    assert meter["owner_id"] == str(prosumer.id)
    assert meter["capacity_kw"] == 5.5
    assert meter["status"] == "active"
    assert meter["online"] is False
    assert meter["last_reading"] is None
    assert meter["totals"] == {
        "consumed_kwh": 0.0,
        "produced_kwh": 0.0,
        "net_kwh": 0.0,
        "readings": 0,
    }
    assert meter["location"]["building"] == "ENG"

    # A prosumer registers only their own meters.
    foreign = await client.post(
        f"{API}/meters",
        json={"serial": "SM_X_1", "capacity_kw": 5, "region": "north", "owner_id": str(other.id)},
        headers=prosumer.headers,
    )
    assert foreign.status_code == 403
    # Serials are unique.
    duplicate = await client.post(
        f"{API}/meters",
        json={"serial": "SM_ENG_001_2025", "capacity_kw": 5, "region": "north"},
        headers=prosumer.headers,
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "CONFLICT"
    # Consumers and investors do not register meters.
    consumer = await signed_in(client, runtime, Role.consumer)
    refused = await client.post(
        f"{API}/meters", json={"serial": "SM_C_1", "capacity_kw": 5}, headers=consumer.headers
    )
    assert refused.status_code == 403
    # Operators register for anyone.
    operator = await signed_in(client, runtime, Role.operator)
    for_other = await make_meter(client, operator, owner_id=str(other.id))
    assert for_other["owner_id"] == str(other.id)
    # Bad input: more than 3 decimals of kW, unknown field, bad serial, bad key.
    for bad in (
        {"serial": "SM_B_1", "capacity_kw": 1.0001, "region": "n"},
        {"serial": "SM_B_2", "capacity_kw": 1, "region": "n", "status": "inactive"},
        {"serial": "bad/serial", "capacity_kw": 1, "region": "n"},
        {"serial": "SM_B_3", "capacity_kw": 1, "region": "n", "device_public_key": "nope"},
        {"serial": "SM_B_4", "capacity_kw": 0, "region": "n"},
    ):
        response = await client.post(f"{API}/meters", json=bad, headers=prosumer.headers)
        assert response.status_code == 422, bad
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_list_filters_and_foreign_meters(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    alice = await signed_in(client, runtime)
    bob = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    a1 = await make_meter(client, alice, serial="SM_A_1", region="north")
    await make_meter(client, alice, serial="SM_A_2", region="south")
    b1 = await make_meter(client, bob, serial="SM_B_1", region="north")

    stored = await client.post(
        f"{API}/meters/{a1['id']}/readings",
        json={"readings": [reading(t, 1.25, 0.5) for t in quarters(now - timedelta(hours=1), 3)]},
        headers=alice.headers,
    )
    assert stored.json()["accepted"] == 3

    own = await client.get(f"{API}/meters", headers=alice.headers)
    assert own.status_code == 200
    body = own.json()
    assert body["total"] == 2
    assert [m["serial"] for m in body["items"]] == ["SM_A_1", "SM_A_2"]
    first = body["items"][0]
    assert first["online"] is True
    assert first["totals"] == {
        "consumed_kwh": 3.75,
        "produced_kwh": 1.5,
        "net_kwh": 2.25,
        "readings": 3,
    }
    assert first["last_reading"]["energy_consumed_kwh"] == 1.25
    assert first["last_reading"]["timestamp"].endswith("Z")

    # Foreign meters do not exist for a prosumer: 404 on every path.
    for path in ("", "/latest", "/readings", "/stats", "/analytics"):
        response = await client.get(f"{API}/meters/{b1['id']}{path}", headers=alice.headers)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "NOT_FOUND"
    patch = await client.patch(
        f"{API}/meters/{b1['id']}", json={"metadata": {}}, headers=alice.headers
    )
    assert patch.status_code == 404

    north = await client.get(f"{API}/meters", params={"region": "north"}, headers=operator.headers)
    assert {m["serial"] for m in north.json()["items"]} == {"SM_A_1", "SM_B_1"}
    by_owner = await client.get(
        f"{API}/meters", params={"owner_id": str(bob.id)}, headers=operator.headers
    )
    assert [m["serial"] for m in by_owner.json()["items"]] == ["SM_B_1"]
    # A prosumer's owner_id filter cannot widen the view.
    sneaky = await client.get(
        f"{API}/meters", params={"owner_id": str(bob.id)}, headers=alice.headers
    )
    assert sneaky.json()["total"] == 2


async def test_update_status_assign_delete(client: httpx.AsyncClient, runtime: Runtime) -> None:
    owner = await signed_in(client, runtime)
    newcomer = await make_user(runtime)
    operator = await signed_in(client, runtime, Role.operator)
    admin = await signed_in(client, runtime, Role.admin)
    meter = await make_meter(client, owner)
    url = f"{API}/meters/{meter['id']}"

    patched = await client.patch(
        url, json={"location": {"building": "LIB"}, "metadata": {"a": 1}}, headers=owner.headers
    )
    assert patched.status_code == 200
    assert patched.json()["location"] == {"building": "LIB"}
    staff_only = await client.patch(url, json={"capacity_kw": 100}, headers=owner.headers)
    assert staff_only.status_code == 403
    by_operator = await client.patch(url, json={"capacity_kw": 12.5}, headers=operator.headers)
    assert by_operator.json()["capacity_kw"] == 12.5

    assert (
        await client.put(f"{url}/status", json={"status": "maintenance"}, headers=owner.headers)
    ).status_code == 403
    status = await client.put(
        f"{url}/status", json={"status": "maintenance"}, headers=operator.headers
    )
    assert status.json()["status"] == "maintenance"

    assert (
        await client.post(
            f"{url}/assign", json={"user_id": str(newcomer.id)}, headers=operator.headers
        )
    ).status_code == 403
    assigned = await client.post(
        f"{url}/assign", json={"user_id": str(newcomer.id)}, headers=admin.headers
    )
    assert assigned.json()["owner_id"] == str(newcomer.id)
    # The previous owner no longer sees it.
    assert (await client.get(url, headers=owner.headers)).status_code == 404
    unassigned = await client.post(f"{url}/unassign", headers=admin.headers)
    assert unassigned.json()["owner_id"] is None

    assert (await client.delete(url, headers=operator.headers)).status_code == 403
    assert (await client.delete(url, headers=admin.headers)).status_code == 204
    assert (await client.get(url, headers=admin.headers)).status_code == 404

    async with runtime.db.sessionmaker() as session:
        actions = set(
            await session.scalars(select(AuditLog.action).where(AuditLog.subject_id == meter["id"]))
        )
    assert {
        "meter.registered",
        "meter.updated",
        "meter.status_changed",
        "meter.assigned",
        "meter.unassigned",
        "meter.deleted",
    } <= actions


async def test_api_key_binding_needs_own_meter(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    bob = await signed_in(client, runtime)
    mine = await make_meter(client, alice)
    theirs = await make_meter(client, bob)
    await make_key(client, alice, ["readings:write"], mine["id"])
    refused = await client.post(
        f"{API}/me/api-keys",
        json={"name": "x", "scopes": ["readings:write"], "meter_id": theirs["id"]},
        headers=alice.headers,
    )
    assert refused.status_code == 404
    unknown = await client.post(
        f"{API}/me/api-keys",
        json={
            "name": "x",
            "scopes": ["readings:write"],
            "meter_id": "00000000-0000-4000-8000-000000000000",
        },
        headers=alice.headers,
    )
    assert unknown.status_code == 404


async def test_department_summary_counts_meters_and_energy(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    member = await make_user(runtime, department="physics")
    member_account = await login(client, member)
    meter = await make_meter(client, member_account)
    await client.post(
        f"{API}/meters/{meter['id']}/readings",
        json=reading(now, 1.5, 0.25),
        headers=member_account.headers,
    )
    dept = await client.get(f"{API}/departments/physics")
    assert dept.status_code == 200
    body = dept.json()
    assert (body["meters"], body["consumed_kwh"], body["produced_kwh"]) == (1, 1.5, 0.25)
