from __future__ import annotations

import itertools
import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridex.auth.models import Role
from gridex.core.runtime import Runtime
from gridex.ledger.installations import split_revenue
from tests.factories import API, make_user, signed_in
from tests.meters.helpers import make_meter


async def test_create_update_and_list_installations(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    operator = await signed_in(client, runtime, Role.operator)
    host = await signed_in(client, runtime)
    investor = await make_user(runtime, role=Role.investor)
    outsider = await signed_in(client, runtime)
    meter = (await make_meter(client, operator))["id"]
    body = {
        "meter_id": meter,
        "shares": [
            {"user_id": str(host.id), "percent": 45},
            {"user_id": str(investor.id), "percent": "35"},
        ],
        "platform_percent": 20,
    }
    assert (
        await client.post(f"{API}/installations", json=body, headers=host.headers)
    ).status_code == 403
    created = await client.post(f"{API}/installations", json=body, headers=operator.headers)
    assert created.status_code == 201, created.text
    installation = created.json()
    assert installation["platform_percent"] == 20
    assert installation["shares"] == [
        {"user_id": str(host.id), "percent": 45},
        {"user_id": str(investor.id), "percent": 35},
    ]
    duplicate = await client.post(f"{API}/installations", json=body, headers=operator.headers)
    assert duplicate.status_code == 409

    changed = body | {
        "shares": [{"user_id": str(host.id), "percent": 50.5}],
        "platform_percent": 49.5,
    }
    updated = await client.put(
        f"{API}/installations/{installation['id']}", json=changed, headers=operator.headers
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["shares"] == [{"user_id": str(host.id), "percent": 50.5}]

    assert (await client.get(f"{API}/installations", headers=host.headers)).json()["total"] == 1
    assert (await client.get(f"{API}/installations", headers=outsider.headers)).json()["total"] == 0
    hidden = await client.get(f"{API}/installations/{installation['id']}", headers=outsider.headers)
    assert hidden.status_code == 404
    assert (await client.get(f"{API}/installations", headers=operator.headers)).json()["total"] == 1


@pytest.mark.parametrize(
    ("shares", "platform"),
    [
        ([45, 35], 21),  # 101
        ([45, 35], 19),  # 99
        ([45.001, 34.999], 20),  # more than 2 decimals
        ([-5, 85], 20),
        ([0, 80], 20),
        ([], 100),
    ],
)
async def test_invalid_shares_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, shares: list[float], platform: int
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    users = [await make_user(runtime) for _ in shares]
    body = {
        "meter_id": (await make_meter(client, admin))["id"],
        "shares": [
            {"user_id": str(u.id), "percent": p} for u, p in zip(users, shares, strict=True)
        ],
        "platform_percent": platform,
    }
    response = await client.post(f"{API}/installations", json=body, headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_unknown_user_and_duplicate_user(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    ghost = {"user_id": str(uuid.uuid4()), "percent": 80}
    body = {
        "meter_id": (await make_meter(client, admin))["id"],
        "shares": [ghost],
        "platform_percent": 20,
    }
    assert (
        await client.post(f"{API}/installations", json=body, headers=admin.headers)
    ).status_code == 422
    twice = body | {"shares": [{"user_id": str(admin.id), "percent": 40}] * 2}
    assert (
        await client.post(f"{API}/installations", json=twice, headers=admin.headers)
    ).status_code == 422


async def test_unknown_or_deleted_meter_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The meter must exist and not be deleted (the database also holds a foreign key)."""
    admin = await signed_in(client, runtime, Role.admin)
    host = await make_user(runtime)
    meter = (await make_meter(client, admin))["id"]
    body = {
        "meter_id": meter,
        "shares": [{"user_id": str(host.id), "percent": 80}],
        "platform_percent": 20,
    }
    created = await client.post(f"{API}/installations", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text

    ghost = str(uuid.uuid4())
    for method, url in (
        ("POST", f"{API}/installations"),
        ("PUT", f"{API}/installations/{created.json()['id']}"),
    ):
        response = await client.request(
            method, url, json=body | {"meter_id": ghost}, headers=admin.headers
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["message"]) == ("VALIDATION_ERROR", "unknown meter")
        assert error["details"] == {"meter_id": ghost}

    other = (await make_meter(client, admin))["id"]
    deleted = await client.delete(f"{API}/meters/{other}", headers=admin.headers)
    assert deleted.status_code == 204, deleted.text
    response = await client.post(
        f"{API}/installations", json=body | {"meter_id": other}, headers=admin.headers
    )
    assert response.status_code == 422
    listed = await client.get(f"{API}/installations", headers=admin.headers)
    assert listed.json()["total"] == 1


@given(
    amount=st.integers(min_value=0, max_value=10**15),
    cuts=st.lists(st.integers(min_value=1, max_value=9_999), min_size=1, max_size=5),
)
def test_split_revenue_is_exact(amount: int, cuts: list[int]) -> None:
    points = sorted(set(cuts))
    bounds = [0, *points, 10_000]
    parts = [b - a for a, b in itertools.pairwise(bounds)]
    shares = [(uuid.uuid4(), bp) for bp in parts[:-1]]
    split = split_revenue(amount, shares, parts[-1])
    assert sum(split.users.values()) + split.platform_micros == amount
    for user, bp in shares:
        assert split.users[user] == amount * bp // 10_000
    assert split.platform_micros >= amount * parts[-1] // 10_000
