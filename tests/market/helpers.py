"""Typed helpers for the market's HTTP tests: traders with meters and funds, orders, clearing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.core.units import money_to_micros
from gridex.market.jobs import clear_due
from tests.factories import API, Account, signed_in
from tests.ledger.helpers import balances, fund
from tests.meters.helpers import make_meter

# One-minute epochs with a 10 s gate closure: a whole trading cycle in about a minute.
MARKET_SETTINGS: dict[str, object] = {
    "epoch_minutes": 1,
    "gate_closure_seconds": 10,
    "market_horizon_hours": 1,
    "min_price": "0.010000",
    "max_price": "1.000000",
    "fee_bps": 100,
}
TRADER_KW = 1000
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
# The next open epoch at NOW: its gate closes at 12:00:50.
NEXT = NOW + timedelta(minutes=1)


def start_clock(clock: FrozenClock) -> datetime:
    clock.set(NOW)
    return NOW


async def trader(
    client: httpx.AsyncClient,
    rt: Runtime,
    *,
    kind: str | None = "bidirectional",
    funds: str = "10",
    region: str = "north",
    role: Role = Role.prosumer,
) -> Account:
    """A signed-in user with a meter of ``kind`` (None: no meter) and ``funds`` available. The
    meter is rated 1 MW, so that it can export 16.666 kWh in one of the tests' one-minute epochs
    (sells are bounded by what the seller's meters can export in an epoch)."""
    account = await signed_in(client, rt, role, region=region)
    if kind is not None:
        await make_meter(client, account, kind=kind, region=region, capacity_kw=TRADER_KW)
    if money_to_micros(funds) > 0:
        await fund(rt, account.id, money_to_micros(funds))
    return account


async def place(
    client: httpx.AsyncClient, account: Account, expect: int = 201, **body: Any
) -> dict[str, Any]:
    body.setdefault("type", "limit")
    if isinstance(body.get("epoch"), datetime):
        body["epoch"] = utc_iso(body["epoch"])
    response = await client.post(f"{API}/market/orders", json=body, headers=account.headers)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def order(client: httpx.AsyncClient, account: Account, order_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/market/orders/{order_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def close_and_clear(clock: FrozenClock, rt: Runtime, epoch: datetime) -> int:
    """Move past the epoch's gate closure and run the clearing job once."""
    clock.set(epoch - timedelta(seconds=5))
    return await clear_due(rt)


async def wallet(rt: Runtime, account: Account) -> tuple[int, int, int]:
    """(available, reserved, escrow_pending) micros."""
    b = await balances(rt, account.id)
    return b.available_micros, b.reserved_micros, b.escrow_pending_micros


async def trial_total(client: httpx.AsyncClient, rt: Runtime) -> str:
    admin = await signed_in(client, rt, Role.admin)
    response = await client.get(f"{API}/admin/ledger/trial-balance", headers=admin.headers)
    assert response.status_code == 200, response.text
    total: str = response.json()["total"]
    return total
