"""What an operator sees of the market without reading the database: one log line per clearing
and settlement, and Prometheus metrics for orders, trades, clearing and settlement in a text
that Prometheus' own parser reads. Also what a buyer sees of the same epoch: only lines and
figures that concern the buyer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.market.jobs import deliver_due, settle_due
from tests.factories import API
from tests.market.helpers import NEXT, close_and_clear, place, start_clock, trader
from tests.market.test_settlement_http import QUARTER_END, meter_of, send_reading


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    from tests.market.helpers import MARKET_SETTINGS

    return {**MARKET_SETTINGS, "access_token_minutes": 60}


async def samples(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of /metrics, parsed by Prometheus' own text parser."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[tuple[str, frozenset[Any]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def delta(
    before: dict[tuple[str, frozenset[Any]], float],
    after: dict[tuple[str, frozenset[Any]], float],
    name: str,
    **labels: str,
) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_a_cleared_and_settled_epoch_is_logged_and_counted(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    seller_meter = await meter_of(client, seller, "production")
    buyer_meter = await meter_of(client, buyer, "consumption")
    before = await samples(client)

    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    refused = await client.post(
        f"{API}/market/orders",
        json={"side": "buy", "type": "limit", "quantity_kwh": 1, "limit_price": "5"},
        headers=buyer.headers,
    )
    assert refused.json()["error"]["code"] == "PRICE_OUT_OF_BOUNDS"

    with capture_logs() as logs:
        assert await close_and_clear(clock, runtime, NEXT) == 1
    [cleared] = [line for line in logs if line["event"] == "epoch_cleared"]
    assert cleared["epoch"] == utc_iso(NEXT)
    assert cleared["region"] == "north"
    assert (cleared["price"], cleared["volume_kwh"], cleared["trades"]) == ("0.200000", 1.0, 1)
    assert cleared["ms"] >= 0

    clock.set(QUARTER_END)
    await send_reading(client, seller, seller_meter, QUARTER_END, produced=15)
    await send_reading(client, buyer, buyer_meter, QUARTER_END, consumed=15)
    assert await deliver_due(runtime) == 1
    with capture_logs() as logs:
        assert await settle_due(runtime) == 1
    [settled] = [line for line in logs if line["event"] == "epoch_settlement"]
    assert (settled["epoch"], settled["region"], settled["participants"]) == (
        utc_iso(NEXT),
        "north",
        2,
    )

    after = await samples(client)
    assert delta(before, after, "gridex_orders_total", side="buy", type="limit") == 1
    assert delta(before, after, "gridex_orders_total", side="sell", type="limit") == 1
    assert delta(before, after, "gridex_orders_refused_total", code="PRICE_OUT_OF_BOUNDS") == 1
    assert delta(before, after, "gridex_trades_total", region="north") == 1
    assert delta(before, after, "gridex_traded_energy_wh_total", region="north") == 1000
    assert delta(before, after, "gridex_clearing_duration_seconds_count", mechanism="auction") == 1
    assert delta(before, after, "gridex_settlements_total", kind="settlement") == 1
    assert delta(before, after, "gridex_settlement_duration_seconds_count") == 1

    # The buyer's own view: the trade without the seller's fee, no payout or share lines.
    [bought] = (await client.get(f"{API}/market/trades", headers=buyer.headers)).json()["items"]
    [sold] = (await client.get(f"{API}/market/trades", headers=seller.headers)).json()["items"]
    assert (bought["side"], bought["fee"]) == ("buy", "0.000000")
    assert (sold["side"], sold["fee"]) == ("sell", "0.002000")
    history = (await client.get(f"{API}/wallet/transactions", headers=buyer.headers)).json()
    lines = [t["type"] for t in history["items"]]
    assert "settlement_payout" not in lines
    assert {"trade_capture", "order_reserve", "topup"} <= set(lines), lines
    seller_lines = (await client.get(f"{API}/wallet/transactions", headers=seller.headers)).json()
    [payout] = [t for t in seller_lines["items"] if t["type"] == "settlement_payout"]
    assert payout["amount"] == "0.198000"
