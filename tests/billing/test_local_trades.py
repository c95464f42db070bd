"""An invoice with local trades, a delivery shortfall, a feed-in credit and a re-settlement after
the invoice was issued, computed by hand. Region ``north`` has no tariff: settlement and
billing use its price band (grid import 1.00, feed-in 0.01)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.market.jobs import deliver_due, resettle_corrections, settle_due
from tests.factories import API, Account, login, signed_in
from tests.market.helpers import MARKET_SETTINGS, NEXT, close_and_clear, place, start_clock, trader
from tests.market.test_settlement_http import meter_of, send_reading, wallet


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {**MARKET_SETTINGS, "access_token_minutes": 60, "tax_rate": Decimal("0.25")}


def _lines(invoice: dict[str, Any]) -> list[tuple[str, str]]:
    return [(ln["kind"], ln["amount"]) for ln in invoice["lines"]]


async def _only_invoice(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    items = (await client.get(f"{API}/billing/invoices", headers=account.headers)).json()["items"]
    (summary,) = [i for i in items if i["kind"] == "invoice"]
    response = await client.get(f"{API}/billing/invoices/{summary['id']}", headers=account.headers)
    body: dict[str, Any] = response.json()
    return body


async def test_trades_shortfall_credit_and_a_later_resettlement(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    seller_meter = await meter_of(client, seller, "production")
    buyer_meter = await meter_of(client, buyer, "consumption")
    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1  # 1 kWh at 0.20
    # One-minute readings covering the epoch: the seller delivered 0.5 of 1 kWh, the buyer
    # consumed 0.6 of 1 kWh.
    epoch_end = NEXT + timedelta(minutes=1)
    clock.set(epoch_end)
    await send_reading(client, seller, seller_meter, epoch_end, produced=0.5, minutes=1)
    await send_reading(client, buyer, buyer_meter, epoch_end, consumed=0.6, minutes=1)
    assert await deliver_due(runtime) == 1
    assert await settle_due(runtime) == 1
    # Seller: 0.198 paid (fee 0.002), 0.5 kWh short x 1.00 charged. Buyer: 0.4 kWh x 0.01 back.
    assert await wallet(runtime, seller) == (198_000 - 500_000, 0, 0)
    assert await wallet(runtime, buyer) == (10_000_000 - 200_000 + 4_000, 0, 0)

    clock.set(datetime(2026, 4, 1, 0, 30, tzinfo=UTC))
    operator = await signed_in(client, runtime, Role.operator)
    for account in (seller, buyer):
        await login(client, account)
    generated = await client.post(
        f"{API}/billing/cycles/2026-03/generate",
        params={"region": "north"},
        headers=operator.headers,
    )
    assert generated.json()["issued"] == 2, generated.text

    bought = await _only_invoice(client, buyer)
    # All 0.6 kWh consumed came from the neighbour: no grid import.
    assert _lines(bought) == [("p2p_purchase", "0.200000"), ("feed_in_credit", "-0.004000")]
    assert bought["lines"][0]["quantity_kwh"] == 1.0
    assert bought["lines"][0]["unit_price"] == "0.200000"
    assert (bought["subtotal"], bought["tax"], bought["total"]) == (
        "0.196000",
        "0.049000",
        "0.245000",
    )
    # The market already moved 0.196 through the wallet: the tax is what is due.
    assert (bought["settled_amount"], bought["amount_due"]) == ("0.196000", "0.049000")

    sold = await _only_invoice(client, seller)
    assert _lines(sold) == [
        ("p2p_sale", "-0.200000"),
        ("fee", "0.002000"),
        ("shortfall", "0.500000"),
    ]
    trades = (await client.get(f"{API}/market/trades", headers=seller.headers)).json()["items"]
    assert sold["lines"][0]["source"] == {"trades": [trades[0]["id"]]}
    charge = sold["lines"][2]["source"]["entries"]
    history = await client.get(
        f"{API}/wallet/transactions", params={"type": "settlement_charge"}, headers=seller.headers
    )
    assert [t["id"] for t in history.json()["items"]] == charge
    # 0.302 subtotal, tax 0.0755, total 0.3775; 0.302 settled through the wallet.
    assert (sold["subtotal"], sold["tax"], sold["total"], sold["amount_due"]) == (
        "0.302000",
        "0.075500",
        "0.377500",
        "0.075500",
    )

    # After the invoice, staff correct the seller's reading to 0.8 kWh: re-settlement gives
    # 0.3 back, and the next generation issues a credit note for it.
    corrected = await client.put(
        f"{API}/meters/{seller_meter['id']}/readings/{utc_iso(epoch_end)}",
        json={
            "energy_consumed_kwh": 0,
            "energy_produced_kwh": 0.8,
            "interval_minutes": 1,
            "reason": "register read on site",
        },
        headers=operator.headers,
    )
    assert corrected.status_code == 200, corrected.text
    assert await resettle_corrections(runtime) == 1
    again = await client.post(
        f"{API}/billing/cycles/2026-03/generate",
        params={"region": "north"},
        headers=operator.headers,
    )
    assert (again.json()["issued"], again.json()["corrections"], again.json()["unchanged"]) == (
        0,
        1,
        1,
    )
    items = (await client.get(f"{API}/billing/invoices", headers=seller.headers)).json()["items"]
    (note_summary,) = [i for i in items if i["kind"] == "credit_note"]
    note = (
        await client.get(f"{API}/billing/invoices/{note_summary['id']}", headers=seller.headers)
    ).json()
    assert [(ln["kind"], ln["amount"], ln["source"]["corrects"]) for ln in note["lines"]] == [
        ("adjustment", "-0.300000", "adjustment")
    ]
    assert (note["subtotal"], note["tax"], note["total"]) == ("-0.300000", "-0.075000", "-0.375000")
    sold = await _only_invoice(client, seller)
    # The re-settlement's 0.3 already reached the wallet; the note takes its tax off the bill.
    assert (sold["corrections"], sold["amount_due"]) == ("-0.075000", "0.000500")
    assert sum(Decimal(ln["amount"]) for ln in sold["lines"]) == Decimal(sold["subtotal"])
