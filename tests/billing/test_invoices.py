"""Monthly invoices computed by hand: time-of-use band edges, a daylight-saving change, a tariff
override in the middle of the month, the month's edges in local time and tax rounding; then
idempotent generation, a correction that becomes a credit note, payment, disputes, the PDF, the
overdue job and other users' invoices (404)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from gridex.auth.models import Role
from gridex.billing import jobs, rules
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.core.units import round_half_even
from gridex.regions.service import create_region
from gridex.tariffs import service as tariffs
from gridex.tariffs.rules import Band
from tests.factories import API, Account, login, signed_in
from tests.ledger.helpers import balances, fund
from tests.meters.helpers import make_meter

REGION = "berlin-bill"
TZ = "Europe/Berlin"  # CET (UTC+1) until 29 March 2026 02:00, then CEST (UTC+2)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"tax_rate": Decimal("0.25"), "invoice_due_days": 14, "currency": "EUR"}


async def _setup(client: httpx.AsyncClient, rt: Runtime, clock: FrozenClock) -> Account:
    """The region with its tariff (peak 17:00-21:00 local at 0.45, else 0.30, feed-in 0.08),
    an override on 10 March 12:00-12:30 UTC at 0.333333, and a member with a meter."""
    clock.set(datetime(2026, 1, 15, tzinfo=UTC))
    async with rt.db.sessionmaker() as session:
        await create_region(session, REGION, at=clock.now(), timezone=TZ)
        admin = SimpleNamespace(user=SimpleNamespace(id=None))
        await tariffs.create_schedule(
            session,
            rt,
            admin,  # type: ignore[arg-type]
            region=REGION,
            import_price_micros=300_000,
            feed_in_price_micros=80_000,
            bands=[Band("peak", 17 * 60, 21 * 60, 450_000)],
            holidays=[],
            effective_from=datetime(2026, 2, 1, tzinfo=UTC),
        )
        await tariffs.create_override(
            session,
            rt,
            admin,  # type: ignore[arg-type]
            region=REGION,
            import_price_micros=333_333,
            feed_in_price_micros=None,
            reason="grid emergency",
            starts_at=datetime(2026, 3, 10, 12, 0, tzinfo=UTC),
            expires_at=datetime(2026, 3, 10, 12, 30, tzinfo=UTC),
        )
        await session.commit()
    member = await signed_in(client, rt, Role.prosumer, region=REGION)
    meter = await make_meter(client, member, region=REGION, capacity_kw=20, serial="SM_BILL_001")
    member.meter_id = meter["id"]  # type: ignore[attr-defined]
    return member


def _q(end: datetime, consumed: float = 0.0, produced: float = 0.0) -> dict[str, Any]:
    return {
        "timestamp": utc_iso(end),
        "energy_consumed_kwh": consumed,
        "energy_produced_kwh": produced,
    }


# Interval ends (UTC) and energy, and where each lands.
READINGS = [
    # 1 March 00:00-00:15 local (28 Feb 23:00 UTC): inside March in Berlin, standard.
    _q(datetime(2026, 2, 28, 23, 15, tzinfo=UTC), consumed=0.4),
    # 5 March (CET): 16:45-17:00 local standard; 17:00-17:15 peak; 20:45-21:00 peak;
    # 21:00-21:15 standard.
    _q(datetime(2026, 3, 5, 16, 0, tzinfo=UTC), consumed=1.0),
    _q(datetime(2026, 3, 5, 16, 15, tzinfo=UTC), consumed=2.0),
    _q(datetime(2026, 3, 5, 20, 0, tzinfo=UTC), consumed=0.5),
    _q(datetime(2026, 3, 5, 20, 15, tzinfo=UTC), consumed=0.25),
    # 5 March 11:00-11:15 UTC: export at feed-in.
    _q(datetime(2026, 3, 5, 11, 15, tzinfo=UTC), produced=3.0),
    # 10 March 12:00-12:15 UTC: the override's price, in the standard band.
    _q(datetime(2026, 3, 10, 12, 15, tzinfo=UTC), consumed=1.001),
    # 30 March (CEST, UTC+2): 16:45-17:00 local standard, 17:00-17:15 local peak.
    _q(datetime(2026, 3, 30, 15, 0, tzinfo=UTC), consumed=0.1),
    _q(datetime(2026, 3, 30, 15, 15, tzinfo=UTC), consumed=1.0),
    # 31 March 23:45-24:00 local (21:45-22:00 UTC): March, standard.
    _q(datetime(2026, 3, 31, 22, 0, tzinfo=UTC), consumed=0.3),
    # 1 April 00:00-00:15 local: April, not on the March invoice.
    _q(datetime(2026, 3, 31, 22, 15, tzinfo=UTC), consumed=4.0),
]

# By hand:
#   standard 0.30: 0.4 + 1.0 + 0.25 + 0.1 + 0.3 = 2.050 kWh -> 0.615000
#   peak 0.45:     2.0 + 0.5 + 1.0             = 3.500 kWh -> 1.575000
#   override 0.333333: 1.001 kWh -> 333.666333 micros... = 0.333666 (half-even to the micro)
#   export 0.08:   3.000 kWh -> -0.240000
#   subtotal 2.283666; tax 25 % = 0.5709165 -> 0.570916 (half to even); total 2.854582
EXPECTED_LINES = [
    ("grid_import", "peak", 3.5, "0.450000", "1.575000"),
    ("grid_import", "standard", 2.05, "0.300000", "0.615000"),
    ("grid_import", "standard", 1.001, "0.333333", "0.333666"),
    ("grid_export", None, 3.0, "0.080000", "-0.240000"),
]


async def _send(client: httpx.AsyncClient, member: Account, readings: list[dict[str, Any]]) -> None:
    await login(client, member)  # the clock moved past the access token's life
    response = await client.post(
        f"{API}/meters/{member.meter_id}/readings",  # type: ignore[attr-defined]
        json={"readings": readings},
        headers=member.headers,
    )
    assert response.status_code in (200, 201), response.text
    assert response.json()["accepted"] == len(readings), response.text


async def _generate(
    client: httpx.AsyncClient, operator: Account, period: str = "2026-03", expect: int = 200
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/billing/cycles/{period}/generate",
        params={"region": REGION},
        headers=operator.headers,
    )
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def _invoices(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/billing/invoices", headers=account.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _invoice(client: httpx.AsyncClient, account: Account, invoice_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/billing/invoices/{invoice_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _issued(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> tuple[Account, Account, dict[str, Any]]:
    member = await _setup(client, runtime, clock)
    clock.set(datetime(2026, 4, 1, 0, 30, tzinfo=UTC))
    await _send(client, member, READINGS)
    operator = await signed_in(client, runtime, Role.operator, region=REGION)
    result = await _generate(client, operator)
    assert result["issued"] == 1
    (summary,) = await _invoices(client, member)
    return member, operator, await _invoice(client, member, summary["id"])


async def test_march_invoice_by_hand(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member, _, invoice = await _issued(client, runtime, clock)
    got = [
        (ln["kind"], ln["band"], ln["quantity_kwh"], ln["unit_price"], ln["amount"])
        for ln in invoice["lines"]
    ]
    assert got == EXPECTED_LINES
    assert invoice["period"] == "2026-03"
    assert invoice["period_start"] == "2026-02-28T23:00:00Z"
    assert invoice["period_end"] == "2026-03-31T22:00:00Z"
    assert invoice["subtotal"] == "2.283666"
    assert invoice["tax"] == "0.570916"
    assert invoice["total"] == "2.854582"
    assert invoice["currency"] == "EUR"
    assert invoice["settled_amount"] == "0.000000"
    assert invoice["amount_due"] == "2.854582"
    assert invoice["status"] == "issued"
    assert invoice["due_date"] == "2026-04-15"
    assert invoice["number"] == "INV-202603-BERLIN-BILL-00001"
    assert sum(Decimal(ln["amount"]) for ln in invoice["lines"]) == Decimal(invoice["subtotal"])
    # Every energy line names the meter and the UTC windows whose readings it sums.
    peak = invoice["lines"][0]["source"]
    assert peak["meters"] == [member.meter_id]  # type: ignore[attr-defined]
    assert ["2026-03-05T16:00:00Z", "2026-03-05T20:00:00Z"] in peak["windows"]
    # After the switch to summer time the peak starts at 15:00 UTC.
    assert ["2026-03-30T15:00:00Z", "2026-03-30T19:00:00Z"] in peak["windows"]
    override = invoice["lines"][2]["source"]
    assert override["windows"] == [["2026-03-10T12:00:00Z", "2026-03-10T12:30:00Z"]]


def test_tax_rounds_half_to_even() -> None:
    assert rules.tax_of(5, 500_000) == 2  # 2.5 -> 2
    assert rules.tax_of(15, 500_000) == 8  # 7.5 -> 8
    assert rules.tax_of(-5, 500_000) == -2
    assert rules.tax_rate_ppm(Decimal("0.075")) == 75_000
    with pytest.raises(ValueError, match="at most 6 decimals"):
        rules.tax_rate_ppm(Decimal("0.0000001"))


async def test_generation_is_idempotent_and_a_correction_becomes_a_credit_note(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member, operator, invoice = await _issued(client, runtime, clock)
    again = await _generate(client, operator)
    assert (again["issued"], again["corrections"], again["unchanged"]) == (0, 0, 1)
    assert len(await _invoices(client, member)) == 1
    # Staff correct the 17:00 peak reading of 5 March from 2.0 to 1.0 kWh.
    response = await client.put(
        f"{API}/meters/{member.meter_id}/readings/2026-03-05T16:15:00Z",  # type: ignore[attr-defined]
        json={
            "timestamp": "2026-03-05T16:15:00Z",
            "energy_consumed_kwh": 1.0,
            "energy_produced_kwh": 0.0,
            "reason": "meter replaced, register misread",
        },
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    result = await _generate(client, operator)
    assert (result["issued"], result["corrections"]) == (0, 1)
    docs = await _invoices(client, member)
    note = next(d for d in docs if d["kind"] == "credit_note")
    note = await _invoice(client, member, note["id"])
    # 1 kWh less peak at 0.45: -0.450000, tax -0.112500.
    assert [(ln["kind"], ln["band"], ln["amount"]) for ln in note["lines"]] == [
        ("adjustment", "peak", "-0.450000")
    ]
    assert (note["subtotal"], note["tax"], note["total"]) == ("-0.450000", "-0.112500", "-0.562500")
    assert note["corrects_id"] == invoice["id"]
    original = await _invoice(client, member, invoice["id"])
    assert original["total"] == "2.854582"  # issued invoices never change
    assert original["corrections"] == "-0.562500"
    assert original["amount_due"] == "2.292082"
    # Nothing changed since: no new document.
    assert (await _generate(client, operator))["corrections"] == 0


async def test_pay_from_wallet_once_and_nobody_else_sees_or_pays(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member, _, invoice = await _issued(client, runtime, clock)
    stranger = await signed_in(client, runtime, Role.prosumer, region=REGION)
    await fund(runtime, stranger.id, 10_000_000)
    url = f"{API}/billing/invoices/{invoice['id']}"
    for path in ("", "/pdf"):
        assert (await client.get(url + path, headers=stranger.headers)).status_code == 404
    paid = await client.post(url + "/pay", headers=stranger.headers)
    assert paid.status_code == 404
    assert paid.json()["error"]["code"] == "NOT_FOUND"
    assert await _invoices(client, stranger) == []
    # Not enough money: 409 and nothing changes.
    await fund(runtime, member.id, 1_000_000)
    short = await client.post(url + "/pay", headers=member.headers)
    assert short.status_code == 409
    assert short.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    await fund(runtime, member.id, 9_000_000)
    key = {**member.headers, "Idempotency-Key": "pay-march"}
    first = await client.post(url + "/pay", headers=key)
    assert first.status_code == 201, first.text
    assert first.json()["amount"] == "2.854582"
    replay = await client.post(url + "/pay", headers=key)
    assert replay.json() == first.json()
    assert (await balances(runtime, member.id)).available_micros == 10_000_000 - 2_854_582
    again = await client.post(url + "/pay", headers=member.headers)
    assert again.status_code == 409
    done = await _invoice(client, member, invoice["id"])
    assert (done["status"], done["paid_amount"], done["amount_due"]) == (
        "paid",
        "2.854582",
        "0.000000",
    )
    history = (await client.get(f"{API}/billing/payments", headers=member.headers)).json()
    assert [p["amount"] for p in history["items"]] == ["2.854582"]


async def test_dispute_resolved_with_a_credit_note_then_overdue(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member, operator, invoice = await _issued(client, runtime, clock)
    url = f"{API}/billing/invoices/{invoice['id']}"
    bad = await client.post(url + "/dispute", json={"reason": ""}, headers=member.headers)
    assert bad.status_code == 422
    opened = await client.post(
        url + "/dispute", json={"reason": "I was away on 5 March"}, headers=member.headers
    )
    assert opened.status_code == 201, opened.text
    dispute = opened.json()
    assert (await _invoice(client, member, invoice["id"]))["status"] == "disputed"
    assert (await client.post(url + "/pay", headers=member.headers)).status_code == 409
    resolve = f"{API}/billing/disputes/{dispute['id']}/resolve"
    forbidden = await client.post(resolve, json={"resolution": "no"}, headers=member.headers)
    assert forbidden.status_code == 403
    too_much = await client.post(
        resolve, json={"resolution": "x", "credit_amount": "3.000000"}, headers=operator.headers
    )
    assert too_much.status_code == 422
    done = await client.post(
        resolve,
        json={"resolution": "Goodwill credit for the peak hour", "credit_amount": "0.854582"},
        headers=operator.headers,
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "resolved"
    after = await _invoice(client, member, invoice["id"])
    assert (after["status"], after["amount_due"], after["total"]) == (
        "issued",
        "2.000000",
        "2.854582",
    )
    note = next(d for d in await _invoices(client, member) if d["kind"] == "credit_note")
    assert note["total"] == "-0.854582"
    assert note["corrects_id"] == invoice["id"]
    # Past the due date (15 April) the overdue job marks it, durably.
    clock.set(datetime(2026, 4, 16, 1, 0, tzinfo=UTC))
    assert await jobs.mark_overdue(runtime) == 1
    assert await jobs.mark_overdue(runtime) == 0
    await login(client, member)
    await login(client, operator)
    late = await _invoice(client, member, invoice["id"])
    assert late["status"] == "overdue"
    assert late["overdue_at"] == "2026-04-16T01:00:00Z"
    listed = await client.get(
        f"{API}/billing/overdue", params={"region": REGION}, headers=operator.headers
    )
    assert [i["id"] for i in listed.json()["items"]] == [invoice["id"]]
    stats = (await client.get(f"{API}/billing/analytics", headers=operator.headers)).json()
    assert stats["outstanding"] == "2.000000"
    assert stats["overdue"] == "2.000000"
    assert stats["disputes"] == {"open": 0, "resolved": 1}
    csv = await client.get(f"{API}/billing/export.csv", headers=operator.headers)
    assert csv.status_code == 200
    rows = csv.text.strip().splitlines()
    assert rows[0].startswith("number,kind,user_id")
    assert any(r.startswith("INV-202603-BERLIN-BILL-00001,invoice,") for r in rows)
    assert len(rows) == 3


async def test_pdf_carries_the_invoice(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member, _, invoice = await _issued(client, runtime, clock)
    response = await client.get(
        f"{API}/billing/invoices/{invoice['id']}/pdf", headers=member.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    for expected in (
        "Gridex",
        "INV-202603-BERLIN-BILL-00001",
        "March 2026",
        "SM_BILL_001",
        "2.854582",
        "0.570916",
        "Grid import, peak",
        "15 Apr 2026",
    ):
        assert expected in text, expected


async def test_month_not_over_and_bad_period(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member = await _setup(client, runtime, clock)
    clock.set(datetime(2026, 3, 31, 21, 0, tzinfo=UTC))  # 23:00 in Berlin: still March
    operator = await signed_in(client, runtime, Role.operator, region=REGION)
    await login(client, member)
    assert (await _generate(client, operator, expect=409))["error"]["code"] == "CONFLICT"
    assert (await _generate(client, operator, "2026-13", expect=422))["error"]["code"] == (
        "VALIDATION_ERROR"
    )
    assert (
        await client.post(f"{API}/billing/cycles/2026-03/generate", headers=member.headers)
    ).status_code == 403


async def test_current_cycle_and_estimate(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member = await _setup(client, runtime, clock)
    clock.set(datetime(2026, 3, 5, 21, 0, tzinfo=UTC))
    await _send(client, member, READINGS[:6])
    body = (await client.get(f"{API}/billing/current-cycle", headers=member.headers)).json()
    assert body["period"] == "2026-03"
    # 0.4 + 1.0 + 0.25 standard, 2.5 peak, 3.0 exported so far.
    assert [(ln["band"], ln["amount"]) for ln in body["lines"]] == [
        ("peak", "1.125000"),
        ("standard", "0.495000"),
        (None, "-0.240000"),
    ]
    assert body["subtotal"] == "1.380000"
    estimate = (await client.get(f"{API}/billing/estimate", headers=member.headers)).json()
    assert estimate["to_date_total"] == body["total"]
    # Elapsed: 28 Feb 23:00 to 5 Mar 21:00 UTC = 118 h of the month's 743 h.
    expected = round_half_even(1_380_000 * 743, 118)
    assert Decimal(estimate["subtotal"]) == Decimal(expected) / 1_000_000
    assert Decimal(estimate["total"]) > Decimal(body["total"])
    assert timedelta(hours=743) == datetime(2026, 3, 31, 22, tzinfo=UTC) - datetime(
        2026, 2, 28, 23, tzinfo=UTC
    )


async def test_the_monthly_job_issues_once_the_local_month_is_over(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member = await _setup(client, runtime, clock)
    clock.set(datetime(2026, 3, 31, 21, 30, tzinfo=UTC))  # 23:30 in Berlin
    await _send(client, member, READINGS[:-2])
    # Berlin's previous month is February: nothing to bill.
    assert await jobs.generate_due(runtime) == 0
    clock.set(datetime(2026, 3, 31, 22, 30, tzinfo=UTC))  # 00:30 on 1 April in Berlin
    await _send(client, member, READINGS[-2:-1])
    assert await jobs.generate_due(runtime) == 1
    assert await jobs.generate_due(runtime) == 0  # generated: re-read only a day later
    clock.set(datetime(2026, 4, 2, 0, 0, tzinfo=UTC))
    assert await jobs.generate_due(runtime) == 0  # re-read: nothing changed
    await login(client, member)
    (invoice,) = await _invoices(client, member)
    assert invoice["total"] == "2.854582"
