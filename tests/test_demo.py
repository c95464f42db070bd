"""The demo community that `make run` seeds: created through the real services, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.demo import (
    DEMO_METERS,
    HISTORY_DAYS,
    last_interval_end,
    reading_at,
    readings_for,
    seed_activity,
    simulate,
)
from gridex.users.bootstrap import DEMO_PASSWORD, seed_demo
from tests.factories import API


async def _login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await client.post(
        f"{API}/auth/login", json={"username": username, "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_demo_community_has_meters_money_shares_and_orders(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await seed_demo(runtime.settings)
    lines = await seed_activity(runtime)
    assert any("DEMO-ALICE-01" in line for line in lines)

    carol = await _login(client, "carol")
    wallet = (await client.get(f"{API}/wallet", headers=carol)).json()
    orders = (await client.get(f"{API}/market/orders", headers=carol)).json()["items"]
    # 60.00 topped up; her one buy order for the next epoch holds its value in reserve.
    assert [(o["side"], o["status"]) for o in orders] == [("buy", "open")]
    assert wallet["reserved"] == orders[0]["reserved"]
    assert Decimal(wallet["available"]) + Decimal(wallet["reserved"]) == Decimal("60")

    alice = await _login(client, "alice")
    meters = (await client.get(f"{API}/meters", headers=alice)).json()["items"]
    assert [m["serial"] for m in meters] == ["DEMO-ALICE-01"]
    end = last_interval_end(runtime.clock.now())
    daily = await client.get(
        f"{API}/meters/{meters[0]['id']}/readings",
        params={
            "interval": "1d",
            "from": (end - timedelta(days=HISTORY_DAYS + 1)).isoformat(),
            "to": end.isoformat(),
        },
        headers=alice,
    )
    assert daily.status_code == 200, daily.text
    produced = sum(point["produced_kwh"] for point in daily.json()["points"])
    generated = readings_for(DEMO_METERS[0], end)
    assert produced == pytest.approx(sum(r["energy_produced_kwh"] for r in generated))
    assert produced > 0

    # The community has a grid tariff: its band runs from feed-in to the import price now.
    tariff = (await client.get(f"{API}/tariffs/current", headers=carol)).json()
    assert (tariff["region"], tariff["source"], tariff["export_price"]) == (
        "campus-north",
        "schedule",
        "0.080000",
    )
    assert tariff["import_price"] in ("0.200000", "0.300000", "0.420000")
    band = (await client.get(f"{API}/market/regions/campus-north", headers=carol)).json()
    assert (band["source"], band["min_price"], band["max_price"]) == (
        "tariff",
        "0.080000",
        tariff["import_price"],
    )

    # Running it again changes nothing.
    assert await seed_activity(runtime) == ["  demo meters, readings and orders exist"]
    assert (await client.get(f"{API}/wallet", headers=carol)).json() == wallet


def test_readings_follow_the_sun_and_respect_capacity() -> None:
    end = datetime(2026, 6, 21, 0, 0, tzinfo=UTC)
    alice = readings_for(DEMO_METERS[0], end, days=1)
    assert len(alice) == 96
    by_time = {r["timestamp"]: r for r in alice}
    assert by_time["2026-06-20T02:00:00Z"]["energy_produced_kwh"] == 0
    assert by_time["2026-06-20T12:15:00Z"]["energy_produced_kwh"] > 0.2
    # 8 kW rated: never more than 2 kWh in 15 minutes.
    assert all(r["energy_produced_kwh"] <= 2.0 for r in alice)
    assert all(r["energy_consumed_kwh"] > 0 for r in alice)
    assert readings_for(DEMO_METERS[0], end, days=1) == alice  # deterministic


async def test_the_live_demo_sends_readings_and_places_orders_once(
    runtime: Runtime, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await seed_demo(runtime.settings)
    await seed_activity(runtime)
    assert await simulate(runtime) == 0  # nothing new has ended yet

    clock.advance(timedelta(hours=1))
    assert await simulate(runtime) == 4 * len(DEMO_METERS)
    assert await simulate(runtime) == 0

    alice = await _login(client, "alice")
    meter = (await client.get(f"{API}/meters", headers=alice)).json()["items"][0]
    latest = (await client.get(f"{API}/meters/{meter['id']}/latest", headers=alice)).json()
    expected = reading_at(DEMO_METERS[0], last_interval_end(clock.now()))
    assert latest["timestamp"] == expected["timestamp"]
    assert latest["energy_produced_kwh"] == expected["energy_produced_kwh"]

    carol = await _login(client, "carol")
    orders = (await client.get(f"{API}/market/orders", headers=carol)).json()["items"]
    epochs = sorted(o["epoch"] for o in orders)
    assert len(epochs) == 2  # one per epoch, never twice
    assert epochs[0] < epochs[1]
