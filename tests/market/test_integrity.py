"""Market integrity: nobody trades with themselves, and nobody sells more than their meters can
export in an epoch."""

from __future__ import annotations

import httpx
import pytest

from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.factories import API
from tests.market.helpers import (
    MARKET_SETTINGS,
    NEXT,
    close_and_clear,
    place,
    start_clock,
    trader,
)
from tests.meters.helpers import make_meter


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


async def test_an_order_that_would_cross_ones_own_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    alice = await trader(client, runtime)
    sell = await place(client, alice, side="sell", quantity_kwh=1, limit_price="0.20")
    refused = await client.post(
        f"{API}/market/orders",
        json={"side": "buy", "type": "limit", "quantity_kwh": 1, "limit_price": "0.25"},
        headers=alice.headers,
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "SELF_TRADE"
    assert refused.json()["error"]["details"] == {"side": "buy", "crosses": "sell"}
    market_buy = await client.post(
        f"{API}/market/orders",
        json={"side": "buy", "type": "market", "quantity_kwh": 1},
        headers=alice.headers,
    )
    assert market_buy.json()["error"]["code"] == "SELF_TRADE"
    # A buy below one's own ask cannot trade with it (in an auction neither can both be
    # accepted): allowed. Moving it across the ask is refused like a new one.
    low = await place(client, alice, side="buy", quantity_kwh=1, limit_price="0.10")
    moved = await client.patch(
        f"{API}/market/orders/{low['id']}", json={"limit_price": "0.30"}, headers=alice.headers
    )
    assert moved.status_code == 409
    assert moved.json()["error"]["code"] == "SELF_TRADE"
    # Once the sell is cancelled, the buy may cross where it was.
    cancelled = await client.delete(f"{API}/market/orders/{sell['id']}", headers=alice.headers)
    assert cancelled.status_code == 200
    await place(client, alice, side="buy", quantity_kwh=1, limit_price="0.25")


async def test_an_auction_never_matches_a_user_with_themselves(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    alice, bob = await trader(client, runtime), await trader(client, runtime)
    await place(client, alice, side="sell", quantity_kwh=1, limit_price="0.20")
    await place(client, alice, side="buy", quantity_kwh=1, limit_price="0.15")
    await place(client, bob, side="buy", quantity_kwh=1, limit_price="0.30")
    await close_and_clear(clock, runtime, NEXT)
    trades = (await client.get(f"{API}/market/trades", headers=alice.headers)).json()["items"]
    assert len(trades) == 1
    assert trades[0]["side"] == "sell"


async def test_a_sell_is_bounded_by_what_the_meters_export_in_an_epoch(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    seller = await trader(client, runtime, kind=None)
    # 10 kW for a one-minute epoch: 0.166 kWh (rounded down to the Wh).
    await make_meter(client, seller, kind="production", region="north", capacity_kw=10)
    huge = await client.post(
        f"{API}/market/orders",
        json={"side": "sell", "type": "limit", "quantity_kwh": 1_000_000, "limit_price": "0.2"},
        headers=seller.headers,
    )
    assert huge.status_code == 422
    body = huge.json()["error"]
    assert body["code"] == "EXCEEDS_CAPACITY"
    assert body["details"] == {"capacity_kwh": 0.166, "open_sells_kwh": 0.0, "available_kwh": 0.166}
    first = await place(client, seller, side="sell", quantity_kwh=0.1, limit_price="0.2")
    second = await client.post(
        f"{API}/market/orders",
        json={"side": "sell", "type": "limit", "quantity_kwh": 0.1, "limit_price": "0.2"},
        headers=seller.headers,
    )
    assert second.json()["error"]["details"]["available_kwh"] == 0.066
    await place(client, seller, side="sell", quantity_kwh=0.066, limit_price="0.2")
    grown = await client.patch(
        f"{API}/market/orders/{first['id']}", json={"quantity_kwh": 0.2}, headers=seller.headers
    )
    assert grown.status_code == 422
    assert grown.json()["error"]["code"] == "EXCEEDS_CAPACITY"
    # A second meter in the region adds its capacity.
    await make_meter(client, seller, kind="production", region="north", capacity_kw=10)
    await place(client, seller, side="sell", quantity_kwh=0.166, limit_price="0.2")
