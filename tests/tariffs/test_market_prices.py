"""The market prices through the tariff: a region without settings takes its band from the
tariff at the order's epoch, settlement charges shortfalls at the tariff's import price and
credits unconsumed energy at its feed-in price, and GET /market/settlements reads each
member's settlement back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.market.jobs import deliver_due, settle_due
from tests.factories import API, Account, signed_in
from tests.market.helpers import MARKET_SETTINGS, NEXT, close_and_clear, place, start_clock, trader
from tests.market.test_settlement_http import QUARTER_END, meter_of, send_reading, wallet
from tests.tariffs.helpers import create_tariff

# "north" is a UTC region. Base 0.30, a 12:00-12:30 band at 0.45 (the epoch 12:01 lies in
# it), feed-in 0.08.
NOON_TARIFF: dict[str, Any] = {
    "import_price": "0.30",
    "export_price": "0.08",
    "time_of_use": [{"name": "noon", "start": "12:00", "end": "12:30", "import_price": "0.45"}],
}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {**MARKET_SETTINGS, "access_token_minutes": 60}


async def settlements(
    client: httpx.AsyncClient, account: Account, expect: int = 200, **params: Any
) -> dict[str, Any]:
    response = await client.get(f"{API}/market/settlements", params=params, headers=account.headers)
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


async def epoch_entries(client: httpx.AsyncClient, account: Account) -> list[str]:
    """The ids of the member's ledger entries that reference a trade or an epoch."""
    response = await client.get(f"{API}/wallet/transactions", headers=account.headers)
    assert response.status_code == 200, response.text
    return sorted(
        t["id"] for t in response.json()["items"] if t["reference_type"] in ("trade", "epoch")
    )


async def test_band_shortfall_and_credit_come_from_the_tariff_and_settlements_read_back(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    await create_tariff(client, admin, "north", **NOON_TARIFF)

    # The region has no market settings: its band is feed-in .. import at the epoch.
    response = await client.get(f"{API}/market/regions/north", headers=operator.headers)
    assert response.status_code == 200, response.text
    assert (
        response.json()["source"],
        response.json()["min_price"],
        response.json()["max_price"],
    ) == ("tariff", "0.080000", "0.450000")

    full_seller = await trader(client, runtime, kind=None, funds="0")
    short_seller = await trader(client, runtime, kind=None, funds="0")
    full_buyer = await trader(client, runtime, kind=None)
    idle_buyer = await trader(client, runtime, kind=None)
    meters = {
        a.id: await meter_of(client, a, k)
        for a, k in (
            (full_seller, "production"),
            (short_seller, "bidirectional"),
            (full_buyer, "consumption"),
            (idle_buyer, "consumption"),
        )
    }
    low = await place(client, full_seller, 422, side="sell", quantity_kwh=1, limit_price="0.07")
    assert low["error"]["code"] == "PRICE_OUT_OF_BOUNDS"
    high = await place(client, full_buyer, 422, side="buy", quantity_kwh=1, limit_price="0.46")
    assert high["error"]["code"] == "PRICE_OUT_OF_BOUNDS"
    for seller in (full_seller, short_seller):
        await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    for buyer in (full_buyer, idle_buyer):
        await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1

    clock.set(QUARTER_END)
    await send_reading(client, full_seller, meters[full_seller.id], QUARTER_END, produced=15)
    await send_reading(client, short_seller, meters[short_seller.id], QUARTER_END, produced=7.5)
    await send_reading(client, full_buyer, meters[full_buyer.id], QUARTER_END, consumed=15)
    await send_reading(client, idle_buyer, meters[idle_buyer.id], QUARTER_END, consumed=3)
    assert await deliver_due(runtime) == 1
    assert await settle_due(runtime) == 1

    # Short seller: 0.5 kWh short x 0.45 (the tariff's noon import price) = 0.225.
    assert await wallet(runtime, short_seller) == (198_000 - 225_000, 0, 0)
    # Idle buyer: 0.8 kWh unconsumed x 0.08 (feed-in) = 0.064.
    assert await wallet(runtime, idle_buyer) == (9_800_000 + 64_000, 0, 0)
    response = await client.get(f"{API}/market/epochs/{utc_iso(NEXT)}", headers=operator.headers)
    assert (
        response.json()["settlement"]["grid_import_price"],
        response.json()["settlement"]["feed_in_price"],
    ) == ("0.450000", "0.080000")

    common = {
        "epoch": utc_iso(NEXT),
        "region": "north",
        "fee": "0.000000",
        "revenue_shares": "0.000000",
        "shortfall_charge": "0.000000",
        "feed_in_credit": "0.000000",
        "purchases": "0.000000",
        "shortfall_kwh": 0.0,
        "unconsumed_kwh": 0.0,
        "sold_kwh": 0.0,
        "bought_kwh": 0.0,
        "delivered_kwh": 0.0,
        "consumed_kwh": 0.0,
        "proceeds": "0.000000",
        "grid_import_price": "0.450000",
        "feed_in_price": "0.080000",
        "settled_at": utc_iso(QUARTER_END),
    }
    expected = [
        (
            full_seller,
            {
                "sold_kwh": 1.0,
                "delivered_kwh": 1.0,
                "proceeds": "0.198000",
                "fee": "0.002000",
                "net": "0.198000",
            },
        ),
        (
            short_seller,
            {
                "sold_kwh": 1.0,
                "delivered_kwh": 0.5,
                "shortfall_kwh": 0.5,
                "proceeds": "0.198000",
                "fee": "0.002000",
                "shortfall_charge": "0.225000",
                "net": "-0.027000",
            },
        ),
        (
            full_buyer,
            {
                "bought_kwh": 1.0,
                "consumed_kwh": 1.0,
                "purchases": "0.200000",
                "net": "-0.200000",
            },
        ),
        (
            idle_buyer,
            {
                "bought_kwh": 1.0,
                "consumed_kwh": 0.2,
                "unconsumed_kwh": 0.8,
                "feed_in_credit": "0.064000",
                "purchases": "0.200000",
                "net": "-0.136000",
            },
        ),
    ]
    for account, figures in expected:
        body = await settlements(client, account)
        assert body["total"] == 1
        (item,) = body["items"]
        entries = item.pop("entries")
        assert item == {**common, "user_id": str(account.id), **figures}
        # Every entry of the epoch that moved the member's own money, and the payouts of its
        # purchases out of escrow, which do not move its wallet (so its history leaves them out).
        own = await epoch_entries(client, account)
        assert set(own) <= set(entries)
        assert entries

    # Members see only their own; naming another member is 403. Operators see everyone.
    refused = await settlements(client, full_buyer, 403, user_id=str(full_seller.id))
    assert refused["error"]["code"] == "FORBIDDEN"
    everyone = await settlements(client, operator)
    assert everyone["total"] == 4
    one = await settlements(client, operator, user_id=str(short_seller.id))
    assert [i["net"] for i in one["items"]] == ["-0.027000"]
    assert (await settlements(client, operator, region="south"))["total"] == 0
    later = await settlements(client, operator, **{"from": utc_iso(NEXT + timedelta(minutes=1))})
    assert later["total"] == 0

    # The forecast's expected clearing price for 12:01 tomorrow is today's 12:01 price.
    clock.set(NEXT + timedelta(hours=23, minutes=59))
    member = await signed_in(client, runtime, Role.consumer)
    response = await client.get(f"{API}/tariffs/forecast", headers=member.headers)
    assert response.status_code == 200, response.text
    points = {p["epoch"]: p for p in response.json()["points"]}
    tomorrow = points[utc_iso(NEXT + timedelta(days=1))]
    assert (tomorrow["expected_clearing_price"], tomorrow["import_price"], tomorrow["band"]) == (
        "0.200000",
        "0.450000",
        "noon",
    )
    assert points[utc_iso(NEXT + timedelta(days=1, minutes=1))]["expected_clearing_price"] is None
