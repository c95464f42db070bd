"""Trading, revenue, investment and financial analytics after one settled trade, checked
against the prices and shares the test chose."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from tests.factories import API, login, make_user, signed_in
from tests.market.helpers import MARKET_SETTINGS, NEXT, close_and_clear, place, start_clock, trader
from tests.market.test_settlement_http import QUARTER_END, meter_of, send_reading, settle


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {**MARKET_SETTINGS, "access_token_minutes": 60}


async def test_money_figures_after_a_settled_trade(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    admin = await signed_in(client, runtime, Role.admin)
    investor = await login(client, await make_user(runtime, role=Role.investor))
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    shared = await meter_of(client, seller, "production")
    own = await meter_of(client, seller, "production")
    await meter_of(client, buyer, "consumption")
    installation = await client.post(
        f"{API}/installations",
        json={
            "meter_id": shared["id"],
            "shares": [
                {"user_id": str(seller.id), "percent": 45},
                {"user_id": str(investor.id), "percent": 35},
            ],
            "platform_percent": 20,
        },
        headers=operator.headers,
    )
    assert installation.status_code == 201, installation.text
    # Sell at 0.10, buy at 0.30: 1 kWh clears at the midpoint 0.20; fee 1 % = 0.002.
    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1
    clock.set(QUARTER_END)
    await send_reading(client, seller, shared, QUARTER_END, produced=9)
    await send_reading(client, seller, own, QUARTER_END, produced=6)
    clock.set(NEXT + timedelta(minutes=1, seconds=900))
    assert (await settle(client, operator))["state"] == "settled"
    for account in (operator, admin, investor, seller, buyer):
        await login(client, account)  # fresh tokens after the clock's jumps

    span = {"from": utc_iso(NEXT - timedelta(hours=1)), "to": utc_iso(NEXT + timedelta(hours=1))}
    bought = await client.get(f"{API}/analytics/trading", params=span, headers=buyer.headers)
    assert bought.status_code == 200, bought.text
    b = bought.json()
    # Grid-only: the band's max (1.00) to import, its min (0.01) for feed-in.
    assert (b["bought_kwh"], b["sold_kwh"], b["purchases"]) == (1.0, 0.0, "0.200000")
    assert (b["average_buy_price"], b["average_sell_price"]) == ("0.200000", None)
    assert (b["grid_import_price"], b["feed_in_price"]) == ("1.000000", "0.010000")
    assert b["saved_vs_grid"] == "0.800000"
    s = (await client.get(f"{API}/analytics/trading", params=span, headers=seller.headers)).json()
    assert (s["sold_kwh"], s["sales"], s["fees"]) == (1.0, "0.200000", "0.002000")
    assert s["average_sell_price"] == "0.200000"
    assert s["earned_vs_feed_in"] == "0.188000"  # 0.200 - 0.002 fee - 0.010 at feed-in

    # The investor's 35 % of the shared meter's 60 % of 0.198: 0.041580.
    inv = await client.get(
        f"{API}/analytics/investments", params={**span, "capital": "1.00"}, headers=investor.headers
    )
    assert inv.status_code == 200, inv.text
    i = inv.json()
    assert [h["meter_id"] for h in i["installations"]] == [shared["id"]]
    assert i["installations"][0]["share_percent"] == 35
    assert i["installations"][0]["produced_kwh"] == 9.0
    assert i["revenue"] == "0.041580"
    assert i["revenue_by_month"] == [{"month": "2026-03", "amount": "0.041580"}]
    assert i["return_percent"] == pytest.approx(4.16)
    bad = await client.get(
        f"{API}/analytics/investments", params={"capital": "1.0000001"}, headers=investor.headers
    )
    assert bad.status_code == 422

    # The seller's revenue: 0.198 - 0.1188 shared away + 45 % of it back as a holder; the
    # investor's: its share of someone else's sale.
    report = await client.get(
        f"{API}/reports/revenue", params={**span, "format": "csv"}, headers=seller.headers
    )
    rows = list(csv.DictReader(io.StringIO(report.text)))
    assert [(r["month"], r["sales"], r["revenue_shares"], r["net"]) for r in rows] == [
        ("2026-03", "0.132660", "0.000000", "0.132660")
    ]
    theirs = await client.get(f"{API}/reports/revenue", params=span, headers=investor.headers)
    assert [(r["sales"], r["revenue_shares"], r["net"]) for r in theirs.json()["rows"]] == [
        ("0.000000", "0.041580", "0.041580")
    ]

    market = await client.get(
        f"{API}/analytics/market", params={**span, "region": "north"}, headers=seller.headers
    )
    m = market.json()
    assert (m["epochs"], m["cleared_epochs"], m["cleared_share_percent"]) == (1, 1, 100.0)
    assert (m["volume_kwh"], m["average_price"], m["orders"]) == (1.0, "0.200000", 2)
    assert m["average_spread"] == "-0.200000"  # best ask 0.10 below best bid 0.30
    assert m["history"][0]["high"] == m["history"][0]["low"] == "0.200000"

    fin = await client.get(f"{API}/analytics/financial", params=span, headers=admin.headers)
    f = fin.json()
    # Fees: 1 % of the trade plus the platform's 20 % of the shared revenue.
    assert f["fees_earned"] == "0.025760"
    assert (f["volume_settled_kwh"], f["value_settled"], f["trades_settled"]) == (
        1.0,
        "0.200000",
        1,
    )
    assert f["deposits"] == "10.000000"  # the buyer's funding, as a top-up
    assert f["outstanding_invoices"] == {"count": 0, "amount": "0.000000"}
    stats = (await client.get(f"{API}/admin/stats", headers=admin.headers)).json()
    assert stats["ledger"] == {"trial_balance": "0.000000", "balanced": True}
    assert stats["users"]["total"] == 5
