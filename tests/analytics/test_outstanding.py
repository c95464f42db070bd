"""The platform's financial figures count the invoices billing has issued and not settled."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.billing.test_invoices import _issued
from tests.factories import API, signed_in


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"tax_rate": Decimal("0.25"), "invoice_due_days": 14, "currency": "EUR"}


async def test_financial_figures_show_outstanding_invoices(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    _, _, invoice = await _issued(client, runtime, clock)
    admin = await signed_in(client, runtime, Role.admin)
    response = await client.get(f"{API}/analytics/financial", headers=admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["currency"] == "EUR"
    assert body["outstanding_invoices"] == {"count": 1, "amount": invoice["amount_due"]}
