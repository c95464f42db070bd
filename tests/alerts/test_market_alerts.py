"""Alerts and notifications of a trading cycle: fills, clearing, settlement with a delivery
shortfall (and the debt it leaves), and a seller whose meter goes offline before gate closure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.market.jobs import deliver_due, settle_due
from gridex.meters.jobs import mark_offline
from tests.alerts.helpers import alerts_of, notifications_of, run_jobs, send
from tests.factories import API, signed_in
from tests.ledger.helpers import fund
from tests.market.helpers import MARKET_SETTINGS, NEXT, NOW, close_and_clear, place, trader
from tests.meters.helpers import make_meter, reading

QUARTER_END = NEXT - timedelta(minutes=1) + timedelta(minutes=15)  # 12:15


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {**MARKET_SETTINGS, "access_token_minutes": 120}


def by_type(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        out.setdefault(item["type"], []).append(item)
    return out


async def test_a_trading_cycle_notifies_and_a_shortfall_raises_alerts(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    seller_meter = await make_meter(client, seller, kind="production", capacity_kw=100)
    buyer_meter = await make_meter(client, buyer, kind="consumption", capacity_kw=100)
    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1
    await run_jobs(runtime)

    seller_notes = by_type(await notifications_of(client, seller))
    [sold] = seller_notes["trade_executed"]
    assert sold["title"] == "Sold 1.0 kWh at 0.200000"
    assert sold["data"]["side"] == "sell"
    assert sold["data"]["epoch"] == utc_iso(NEXT)
    [cleared] = seller_notes["epoch_cleared"]
    assert cleared["data"]["price"] == "0.200000"
    assert cleared["data"]["sold_kwh"] == 1.0
    buyer_notes = by_type(await notifications_of(client, buyer))
    assert buyer_notes["trade_executed"][0]["data"]["side"] == "buy"
    assert buyer_notes["epoch_cleared"][0]["data"]["bought_kwh"] == 1.0

    # The seller exports half of what it sold: a shortfall charge of 0.5 kWh at 1.00.
    clock.set(QUARTER_END)
    await send(client, seller, seller_meter, reading(QUARTER_END, produced=7.5))
    await send(client, buyer, buyer_meter, reading(QUARTER_END, consumed=15))
    assert await deliver_due(runtime) == 1
    assert await settle_due(runtime) == 1
    await run_jobs(runtime)

    alerts = by_type(await alerts_of(client, seller))
    [shortfall] = alerts["settlement_shortfall"]
    assert shortfall["subject"] == {"kind": "user", "id": str(seller.id)}
    assert shortfall["details"]["shortfall_kwh"] == 0.5
    assert shortfall["details"]["charge"] == "0.500000"
    # 0.198 received - 0.5 charged: a debt.
    [low] = alerts["low_balance"]
    assert low["severity"] == "critical"
    assert low["details"]["available"] == "-0.302000"
    settled = by_type(await notifications_of(client, seller))["settlement_completed"]
    assert settled[0]["data"]["charged"] == "0.500000"
    assert by_type(await notifications_of(client, buyer))["settlement_completed"]
    assert await alerts_of(client, buyer) == []

    # Paying the debt resolves low_balance by itself.
    await fund(runtime, seller.id, 1_000_000)
    await run_jobs(runtime)
    low_after = by_type(await alerts_of(client, seller))["low_balance"][0]
    assert low_after["status"] == "resolved"
    assert low_after["auto_resolved"] is True


async def test_seller_offline_before_gate_reaches_seller_and_region_operator(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW - timedelta(minutes=50))
    seller = await trader(client, runtime, kind=None, funds="0")
    operator = await signed_in(client, runtime, Role.operator, region="north")
    elsewhere = await signed_in(client, runtime, Role.operator, region="south")
    meter = await make_meter(client, seller, kind="production", capacity_kw=1000)
    await send(client, seller, meter, reading(NOW - timedelta(minutes=60), produced=1))
    clock.set(NOW)
    assert await mark_offline(runtime) == 1
    later = NEXT + timedelta(minutes=5)
    order = await place(
        client, seller, side="sell", quantity_kwh=1, limit_price="0.10", epoch=later
    )
    await run_jobs(runtime)

    [alert] = [
        a for a in await alerts_of(client, seller) if a["type"] == "seller_offline_before_gate"
    ]
    assert alert["severity"] == "critical"
    assert alert["details"]["open_sell_orders"] == 1
    assert alert["details"]["next_gate_closure"] == utc_iso(later - timedelta(seconds=10))
    assert [
        a["id"] for a in await alerts_of(client, operator, type="seller_offline_before_gate")
    ] == [alert["id"]]
    assert by_type(await notifications_of(client, operator))["seller_offline_before_gate"]
    assert await notifications_of(client, elsewhere) == []
    assert by_type(await notifications_of(client, seller))["seller_offline_before_gate"]

    # Still offline, still open: the same alert.
    await run_jobs(runtime)
    assert len(await alerts_of(client, seller, type="seller_offline_before_gate")) == 1

    # The seller cancels while the gate is open: nothing at risk any more.
    response = await client.delete(f"{API}/market/orders/{order['id']}", headers=seller.headers)
    assert response.status_code == 200, response.text
    await run_jobs(runtime)
    [done] = await alerts_of(client, seller, type="seller_offline_before_gate")
    assert done["status"] == "resolved"
