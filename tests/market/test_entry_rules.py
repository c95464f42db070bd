"""The order-entry rules hold for changes as for new orders: a new limit must lie in the
region's own band, and a change that holds more is refused while the buyer is in debt."""

from __future__ import annotations

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from tests.factories import API, signed_in
from tests.market.helpers import MARKET_SETTINGS, order, place, start_clock, trader, wallet


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


async def test_a_new_limit_outside_the_regions_band_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    admin = await signed_in(client, runtime, Role.admin)
    band = {"mechanism": "auction", "min_price": "0.1", "max_price": "0.6", "fee_bps": 100}
    saved = await client.put(f"{API}/market/regions/north", json=band, headers=admin.headers)
    assert saved.status_code == 200, saved.text
    buyer = await trader(client, runtime)
    placed = await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.5")
    url = f"{API}/market/orders/{placed['id']}"
    # Inside the deployment's default band (up to 1.0), outside the region's.
    refused = await client.patch(url, json={"limit_price": "0.7"}, headers=buyer.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "PRICE_OUT_OF_BOUNDS"
    assert refused.json()["error"]["details"] == {"min_price": "0.100000", "max_price": "0.600000"}
    assert await order(client, buyer, placed["id"]) == {**placed, "fills": []}
    lowered = await client.patch(url, json={"limit_price": "0.2"}, headers=buyer.headers)
    assert lowered.status_code == 200, lowered.text
    assert lowered.json()["reserved"] == "0.200000"


async def test_holding_more_is_refused_in_debt_holding_less_is_not(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = start_clock(clock)
    buyer = await trader(client, runtime, funds="1")
    placed = await place(client, buyer, side="buy", quantity_kwh=2, limit_price="0.25")
    async with runtime.db.sessionmaker() as session:  # a delivery shortfall leaves a debt
        await ledger.charge(
            session, at=now, user_id=buyer.id, amount_micros=2_000_000, description="shortfall"
        )
        await session.commit()
    assert await wallet(runtime, buyer) == (-1_500_000, 500_000, 0)
    url = f"{API}/market/orders/{placed['id']}"
    more = await client.patch(url, json={"quantity_kwh": 3}, headers=buyer.headers)
    assert more.status_code == 409, more.text
    assert more.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert more.json()["error"]["details"] == {"available": "-1.500000"}
    less = await client.patch(url, json={"quantity_kwh": 1}, headers=buyer.headers)
    assert less.status_code == 200, less.text
    assert await wallet(runtime, buyer) == (-1_250_000, 250_000, 0)
