"""Invoices from the billing domain: issued ones are notified, an unpaid one above the balance
is a low balance, an overdue one an alert until it is paid."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from gridex.billing import jobs as billing_jobs
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.alerts.helpers import alerts_of, notifications_of, run_jobs
from tests.billing.test_invoices import REGION, _issued
from tests.factories import API, login
from tests.ledger.helpers import fund


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"invoice_due_days": 14, "access_token_minutes": 60 * 24 * 30}


async def test_an_overdue_invoice_is_an_alert_until_paid(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    member, operator, invoice = await _issued(client, runtime, clock)
    assert invoice["amount_due"] == "2.283666"
    await run_jobs(runtime)
    await run_jobs(runtime)

    [issued] = [n for n in await notifications_of(client, member) if n["type"] == "invoice_issued"]
    assert issued["data"]["invoice_id"] == invoice["id"]
    assert issued["data"]["amount_due"] == "2.283666"
    [low] = await alerts_of(client, member, type="low_balance")
    assert (low["severity"], low["details"]["invoices_due"]) == ("warning", "2.283666")

    # Past the due date the billing job marks it overdue, and the alert follows.
    clock.set(datetime(2026, 4, 16, 1, 0, tzinfo=UTC))
    assert await billing_jobs.mark_overdue(runtime) == 1
    await run_jobs(runtime)
    await login(client, member)
    await login(client, operator)
    [overdue] = await alerts_of(client, member, type="invoice_overdue")
    assert overdue["subject"] == {"kind": "invoice", "id": invoice["id"]}
    assert overdue["region"] == REGION
    assert overdue["details"] == {
        "number": invoice["number"],
        "due_date": "2026-04-15",
        "amount_due": "2.283666",
    }
    staff_view = await alerts_of(client, operator, type="invoice_overdue")
    assert [a["id"] for a in staff_view] == [overdue["id"]]

    # Paid from the wallet: both conditions are gone.
    await fund(runtime, member.id, 5_000_000)
    paid = await client.post(f"{API}/billing/invoices/{invoice['id']}/pay", headers=member.headers)
    assert paid.status_code == 201, paid.text
    await run_jobs(runtime)
    statuses = {a["type"]: a["status"] for a in await alerts_of(client, member)}
    assert statuses == {"invoice_overdue": "resolved", "low_balance": "resolved"}
