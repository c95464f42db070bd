"""Continuous regions over HTTP, and clearing raced from two workers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.market import auction
from gridex.market.jobs import ensure_horizon
from tests.factories import API, signed_in
from tests.market.helpers import (
    MARKET_SETTINGS,
    NEXT,
    close_and_clear,
    order,
    place,
    start_clock,
    trader,
    trial_total,
    wallet,
)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


async def make_continuous(client: httpx.AsyncClient, runtime: Runtime, region: str) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    response = await client.put(
        f"{API}/market/regions/{region}",
        json={"mechanism": "continuous", "min_price": "0.01", "max_price": "1", "fee_bps": 100},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text


async def test_continuous_matches_on_arrival_at_the_resting_price(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await make_continuous(client, runtime, "north")
    seller = await trader(client, runtime, funds="0")
    cheap = await trader(client, runtime, funds="0")
    buyer = await trader(client, runtime)

    ask = await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    ask2 = await place(client, cheap, side="sell", quantity_kwh=1, limit_price="0.12")
    assert ask["status"] == "open"
    bid = await place(client, buyer, side="buy", quantity_kwh=1.5, limit_price="0.15")
    # 1 kWh at 0.10 then 0.5 kWh at 0.12, each at the resting order's price.
    assert (bid["status"], bid["filled_kwh"], bid["average_price"]) == (
        "filled",
        1.5,
        "0.106667",
    )
    assert bid["reserved"] == "0.000000"
    assert await wallet(runtime, buyer) == (10_000_000 - 160_000, 0, 160_000)
    resting = await order(client, cheap, ask2["id"])
    assert (resting["status"], resting["filled_kwh"]) == ("partially_filled", 0.5)
    assert [f["price"] for f in resting["fills"]] == ["0.120000"]
    assert (await order(client, seller, ask["id"]))["status"] == "filled"

    book = (await client.get(f"{API}/market/orderbook", headers=cheap.headers)).json()
    assert book["mechanism"] == "continuous"
    assert book["bids"] == []
    assert [(lv["price"], lv["quantity_kwh"], lv["own_orders"]) for lv in book["asks"]] == [
        ("0.120000", 0.5, 1)
    ]

    # A bid below the book rests; raising it by a modification matches it.
    low = await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.11")
    assert low["status"] == "open"
    raised = await client.patch(
        f"{API}/market/orders/{low['id']}", json={"limit_price": "0.13"}, headers=buyer.headers
    )
    assert raised.status_code == 200, raised.text
    assert (raised.json()["status"], raised.json()["filled_kwh"]) == ("partially_filled", 0.5)
    assert raised.json()["reserved"] == "0.065000"  # 0.5 kWh left at 0.13

    assert await close_and_clear(clock, runtime, NEXT) == 1
    epoch = (await client.get(f"{API}/market/epochs/{utc_iso(NEXT)}", headers=buyer.headers)).json()
    assert epoch["mechanism"] == "continuous"
    clearing_record = epoch["clearing"]
    assert (clearing_record["trades"], clearing_record["volume_kwh"]) == (3, 2.0)
    # Volume-weighted: (0.10 + 0.06 + 0.06) / 2 kWh.
    assert clearing_record["price"] == "0.110000"
    rest = await order(client, buyer, low["id"])
    assert (rest["status"], rest["reserved"]) == ("partially_filled", "0.000000")
    assert await wallet(runtime, buyer) == (10_000_000 - 220_000, 0, 220_000)
    assert await trial_total(client, runtime) == "0.000000"


async def test_continuous_cancel_after_partial_fill(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await make_continuous(client, runtime, "north")
    seller = await trader(client, runtime, funds="0")
    buyer = await trader(client, runtime)
    bid = await place(client, buyer, side="buy", quantity_kwh=2, limit_price="0.20")
    sold = await place(client, seller, side="sell", type="market", quantity_kwh=0.5)
    assert (sold["status"], sold["average_price"]) == ("filled", "0.200000")
    assert await wallet(runtime, buyer) == (9_600_000, 300_000, 100_000)
    cancelled = await client.delete(f"{API}/market/orders/{bid['id']}", headers=buyer.headers)
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["filled_kwh"]) == ("cancelled", 0.5)
    assert await wallet(runtime, buyer) == (9_900_000, 0, 100_000)
    assert await trial_total(client, runtime) == "0.000000"


async def test_mechanism_change_spares_epochs_with_orders(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    user = await trader(client, runtime)
    await ensure_horizon(runtime)
    await place(client, user, side="buy", quantity_kwh=1, limit_price="0.1")
    await make_continuous(client, runtime, "north")
    epochs = (await client.get(f"{API}/market/epochs", headers=user.headers)).json()["items"]
    assert epochs[0]["mechanism"] == "auction"  # has an order
    assert {e["mechanism"] for e in epochs[1:]} == {"continuous"}


async def test_two_workers_clear_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    sellers = [await trader(client, runtime, funds="0") for _ in range(3)]
    buyers = [await trader(client, runtime) for _ in range(3)]
    for i, s in enumerate(sellers):
        await place(client, s, side="sell", quantity_kwh=1, limit_price=f"0.1{i}")
    for i, b in enumerate(buyers):
        await place(client, b, side="buy", quantity_kwh=1, limit_price=f"0.2{i}")
    clock.set(NEXT)
    results = await asyncio.gather(auction.clear_due(runtime), auction.clear_due(runtime))
    assert sorted(results) == [0, 1]
    trades = 0
    for b in buyers:
        trades += (await client.get(f"{API}/market/trades", headers=b.headers)).json()["total"]
    assert trades == 3
    assert await trial_total(client, runtime) == "0.000000"
