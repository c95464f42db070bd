"""Regions are objects that admins create; everything else may name existing regions only."""

from __future__ import annotations

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.market.jobs import ensure_horizon
from tests.factories import API, signed_in
from tests.market.helpers import MARKET_SETTINGS, place, start_clock, trader
from tests.meters.helpers import make_meter

BAND = {"mechanism": "auction", "min_price": "0.05", "max_price": "0.30", "fee_bps": 100}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


def _unknown(response: httpx.Response, region: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "UNKNOWN_REGION"
    assert error["details"]["region"] == region


async def test_only_admins_create_regions_and_everyone_lists_them(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    refused = await client.put(f"{API}/market/regions/harbour", json=BAND, headers=operator.headers)
    assert refused.status_code == 403
    assert (
        await client.get(f"{API}/market/regions/harbour", headers=admin.headers)
    ).status_code == 404
    created = await client.put(
        f"{API}/market/regions/harbour",
        json={**BAND, "timezone": "Europe/Lisbon"},
        headers=admin.headers,
    )
    assert created.status_code == 200, created.text
    assert created.json()["timezone"] == "Europe/Lisbon"
    listed = await client.get(f"{API}/market/regions", headers=operator.headers)
    names = [r["region"] for r in listed.json()]
    assert "harbour" in names
    assert names == sorted(names)
    bad_zone = await client.put(
        f"{API}/market/regions/island",
        json={**BAND, "timezone": "Mars/Olympus"},
        headers=admin.headers,
    )
    assert bad_zone.status_code == 422
    bad_name = await client.put(f"{API}/market/regions/Bad_Name", json=BAND, headers=admin.headers)
    assert bad_name.status_code == 422
    logs = await client.get(
        f"{API}/admin/audit-logs", params={"action": "region.created"}, headers=admin.headers
    )
    assert [e["subject_id"] for e in logs.json()["items"]] == ["harbour"]


async def test_users_meters_and_orders_name_existing_regions_only(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    registered = await client.post(
        f"{API}/auth/register",
        json={
            "username": "newcomer",
            "email": "newcomer@example.org",
            "password": "Sunny-Roof-99",
            "region": "atlantis",
        },
    )
    _unknown(registered, "atlantis")
    member = await trader(client, runtime)
    meter = await client.post(
        f"{API}/meters",
        json={"serial": "SM_ATL_1", "kind": "production", "region": "atlantis", "capacity_kw": 5},
        headers=member.headers,
    )
    _unknown(meter, "atlantis")
    order = await place(
        client, member, expect=422, side="buy", quantity_kwh=1, limit_price="0.1", region="atlantis"
    )
    assert order["error"]["code"] == "UNKNOWN_REGION"
    admin = await signed_in(client, runtime, Role.admin)
    invited = await client.post(
        f"{API}/users",
        json={
            "username": "inv",
            "email": "inv@example.org",
            "role": "consumer",
            "region": "atlantis",
        },
        headers=admin.headers,
    )
    _unknown(invited, "atlantis")


async def test_moving_region_is_an_operators_decision(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = await signed_in(client, runtime, region="north")
    moved = await client.patch(f"{API}/me", json={"region": "south"}, headers=member.headers)
    assert moved.status_code == 403
    assert moved.json()["error"]["details"]["region"] == "north"
    same = await client.patch(
        f"{API}/me", json={"region": "north", "first_name": "Ann"}, headers=member.headers
    )
    assert same.status_code == 200
    homeless = await signed_in(client, runtime, region=None)
    chosen = await client.patch(f"{API}/me", json={"region": "south"}, headers=homeless.headers)
    assert chosen.status_code == 200
    assert chosen.json()["region"] == "south"
    admin = await signed_in(client, runtime, Role.admin)
    by_staff = await client.patch(
        f"{API}/users/{member.id}", json={"region": "east"}, headers=admin.headers
    )
    assert by_staff.status_code == 200
    assert by_staff.json()["region"] == "east"


async def test_the_horizon_covers_known_regions_only(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    member = await signed_in(client, runtime)
    await make_meter(client, member, kind="production", region="west")
    assert await ensure_horizon(runtime) > 0
    epochs = await client.get(
        f"{API}/market/epochs", params={"region": "west"}, headers=member.headers
    )
    assert epochs.status_code == 200
    assert epochs.json()["items"]
