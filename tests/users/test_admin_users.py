from __future__ import annotations

import csv
import io

import httpx

from gridex.auth.models import Role
from gridex.core.runtime import Runtime
from tests.factories import API, PASSWORD, last_code, make_user, signed_in


async def test_invite_then_set_password(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    invited = await client.post(
        f"{API}/users",
        json={
            "username": "otto",
            "email": "otto@example.org",
            "role": "operator",
            "region": "north",
        },
        headers=admin.headers,
    )
    assert invited.status_code == 201, invited.text
    assert invited.json()["status"] == "invited"
    # No password yet: sign-in fails like any wrong credential.
    login = await client.post(f"{API}/auth/login", json={"username": "otto", "password": PASSWORD})
    assert login.status_code == 401

    code = await last_code(runtime, "otto@example.org")
    wrong = await client.post(
        f"{API}/auth/set-password",
        json={
            "email": "otto@example.org",
            "otp": "000000" if code != "000000" else "111111",
            "password": PASSWORD,
        },
    )
    assert wrong.status_code == 422
    done = await client.post(
        f"{API}/auth/set-password",
        json={"email": "otto@example.org", "otp": code, "password": PASSWORD},
    )
    assert done.status_code == 200
    assert done.json()["status"] == "active"
    assert done.json()["email_verified"] is True
    login = await client.post(f"{API}/auth/login", json={"username": "otto", "password": PASSWORD})
    assert login.status_code == 200
    assert login.json()["user"]["role"] == "operator"


async def test_only_admins_invite_and_manage(client: httpx.AsyncClient, runtime: Runtime) -> None:
    operator = await signed_in(client, runtime, Role.operator)
    prosumer = await signed_in(client, runtime)
    invite = {"username": "eve", "email": "eve@example.org", "role": "admin"}
    for account in (operator, prosumer):
        response = await client.post(f"{API}/users", json=invite, headers=account.headers)
        assert response.status_code == 403
    # Operators read; prosumers do not even list.
    assert (await client.get(f"{API}/users", headers=operator.headers)).status_code == 200
    assert (await client.get(f"{API}/users", headers=prosumer.headers)).status_code == 403
    escalate = await client.put(
        f"{API}/users/{prosumer.id}/role", json={"role": "admin"}, headers=prosumer.headers
    )
    assert escalate.status_code == 403
    by_operator = await client.put(
        f"{API}/users/{prosumer.id}/role", json={"role": "admin"}, headers=operator.headers
    )
    assert by_operator.status_code == 403
    me = await client.get(f"{API}/me", headers=prosumer.headers)
    assert me.json()["role"] == "prosumer"


async def test_search_filter_paginate(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin, region="hq")
    for i in range(5):
        await make_user(runtime, username=f"north-{i}", region="north", department="physics")
    await make_user(runtime, role=Role.consumer, username="south-1", region="south")

    page = await client.get(
        f"{API}/users",
        params={"region": "north", "per_page": 2, "page": 2},
        headers=admin.headers,
    )
    body = page.json()
    assert (body["total"], body["page"], body["per_page"], body["pages"]) == (5, 2, 2, 3)
    assert len(body["items"]) == 2

    consumers = await client.get(f"{API}/users", params={"role": "consumer"}, headers=admin.headers)
    assert [u["username"] for u in consumers.json()["items"]] == ["south-1"]
    search = await client.get(f"{API}/users", params={"search": "NORTH-3"}, headers=admin.headers)
    assert [u["username"] for u in search.json()["items"]] == ["north-3"]
    too_many = await client.get(f"{API}/users", params={"per_page": 101}, headers=admin.headers)
    assert too_many.status_code == 422

    dept = await client.get(f"{API}/departments/physics")
    assert dept.status_code == 200
    assert dept.json()["members"] == 5
    assert dept.json()["members_by_role"] == {"prosumer": 5}
    assert (await client.get(f"{API}/departments/none-such")).status_code == 404


async def test_update_role_suspend_delete(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    target = await signed_in(client, runtime)

    patched = await client.patch(
        f"{API}/users/{target.id}",
        json={"region": "south", "email": "new@example.org"},
        headers=admin.headers,
    )
    assert patched.json()["region"] == "south"
    assert patched.json()["email"] == "new@example.org"

    role = await client.put(
        f"{API}/users/{target.id}/role", json={"role": "consumer"}, headers=admin.headers
    )
    assert role.json()["role"] == "consumer"
    # The role is in the token, so existing sessions end.
    assert (await client.get(f"{API}/me", headers=target.headers)).status_code == 401

    self_demote = await client.put(
        f"{API}/users/{admin.id}/role", json={"role": "consumer"}, headers=admin.headers
    )
    assert self_demote.status_code == 403

    deleted = await client.delete(f"{API}/users/{target.id}", headers=admin.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"{API}/users/{target.id}", headers=admin.headers)
    assert gone.json()["status"] == "deleted"
    assert gone.json()["email"] is None
    assert gone.json()["username"].startswith("deleted-")
    relogin = await client.post(
        f"{API}/auth/login", json={"email": "new@example.org", "password": PASSWORD}
    )
    assert relogin.status_code == 401
    listed = await client.get(f"{API}/users", headers=admin.headers)
    assert str(target.id) not in [u["id"] for u in listed.json()["items"]]

    activity = await client.get(f"{API}/users/{target.id}/activity", headers=admin.headers)
    actions = {item["action"] for item in activity.json()["items"]}
    assert {"user.updated", "user.role_changed", "user.deleted"} <= actions
    assert (
        await client.get(f"{API}/users/00000000-0000-4000-8000-000000000000", headers=admin.headers)
    ).status_code == 404


async def test_export_csv(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    await make_user(runtime, username="csv-one", region="east")
    response = await client.get(
        f"{API}/users/export.csv", params={"region": "east"}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["username"] for row in rows] == ["csv-one"]
    assert rows[0]["role"] == "prosumer"


async def test_audit_log_records_admin_actions(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    target = await signed_in(client, runtime)
    await client.post(
        f"{API}/users/{target.id}/suspend",
        json={"reason": "unpaid"},
        headers={**admin.headers, "X-Request-ID": "req-suspend-1"},
    )
    logs = await client.get(
        f"{API}/admin/audit-logs", params={"action": "user.suspended"}, headers=admin.headers
    )
    [entry] = logs.json()["items"]
    assert entry["actor_id"] == str(admin.id)
    assert entry["subject_id"] == str(target.id)
    assert entry["request_id"] == "req-suspend-1"
    assert entry["ip"] == "127.0.0.1"
    assert entry["details"] == {"reason": "unpaid"}
    operator = await signed_in(client, runtime, Role.operator)
    assert (
        await client.get(f"{API}/admin/audit-logs", headers=operator.headers)
    ).status_code == 403


async def test_export_csv_neutralises_formulas(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    member = await signed_in(client, runtime)
    updated = await client.patch(
        f"{API}/me",
        json={"first_name": '=HYPERLINK("http://evil.example","x")', "last_name": "@SUM(1+1)"},
        headers=member.headers,
    )
    assert updated.status_code == 200, updated.text
    response = await client.get(f"{API}/users/export.csv", headers=admin.headers)
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(response.text))}
    row = rows[str(member.id)]
    assert row["first_name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert row["last_name"] == "'@SUM(1+1)"
    assert row["username"] == member.username


async def test_search_treats_like_wildcards_as_text(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    await make_user(runtime, username="under_score")
    await make_user(runtime, username="plain")
    for term, expected in (("_", ["under_score"]), ("%", []), ("r_s", ["under_score"])):
        found = await client.get(f"{API}/users", params={"search": term}, headers=admin.headers)
        assert [u["username"] for u in found.json()["items"]] == expected, term
