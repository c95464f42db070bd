"""Region policy ``meter_approval``: under ``operator`` a member's new meter is pending (no
orders, no readings) until an operator approves it; under ``auto`` it is active at once."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from gridex.audit.models import AuditLog
from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.meters.models import RejectedReading
from tests.factories import API, Account, new_region, signed_in
from tests.market.helpers import MARKET_SETTINGS, NEXT, place, start_clock
from tests.meters.helpers import NOW, make_meter, reading


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


async def _region_with(
    client: httpx.AsyncClient, runtime: Runtime, admin: Account, approval: str | None
) -> str:
    region = await new_region(runtime)
    body: dict[str, object] = {
        "mechanism": "auction",
        "min_price": "0.01",
        "max_price": "1",
        "fee_bps": 100,
    }
    if approval is not None:
        body["meter_approval"] = approval
    put = await client.put(f"{API}/market/regions/{region}", json=body, headers=admin.headers)
    assert put.status_code == 200, put.text
    assert put.json()["meter_approval"] == (approval or "auto")
    return region


async def test_operator_approval_gates_orders_and_readings(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    region = await _region_with(client, runtime, admin, "operator")
    member = await signed_in(client, runtime, region=region)
    meter = await make_meter(client, member, region=region, capacity_kw=1000)
    assert meter["status"] == "pending"

    # Not eligible: a sell needs an active meter in the region.
    refused = await place(
        client, member, expect=409, side="sell", quantity_kwh=1, limit_price="0.5", epoch=NEXT
    )
    assert refused["error"]["code"] == "NO_ELIGIBLE_METER"
    # Its readings are refused and kept as dead letters with the reason.
    sent = await client.post(
        f"{API}/meters/{meter['id']}/readings", json=reading(NOW), headers=member.headers
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == 0
    assert sent.json()["rejected"][0]["code"] == "CONFLICT"
    async with runtime.db.sessionmaker() as session:
        reasons = list(
            await session.scalars(
                select(RejectedReading.reason).where(
                    RejectedReading.meter_serial == meter["serial"]
                )
            )
        )
    assert reasons == ["meter_pending"]
    # The member cannot approve their own meter; an operator lists the pending ones and does.
    own = await client.put(
        f"{API}/meters/{meter['id']}/status", json={"status": "active"}, headers=member.headers
    )
    assert own.status_code == 403
    pending = await client.get(
        f"{API}/meters", params={"status": "pending", "region": region}, headers=operator.headers
    )
    assert [m["id"] for m in pending.json()["items"]] == [meter["id"]]
    approved = await client.put(
        f"{API}/meters/{meter['id']}/status", json={"status": "active"}, headers=operator.headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active"
    async with runtime.db.sessionmaker() as session:
        actions = list(
            await session.scalars(select(AuditLog.action).where(AuditLog.subject_id == meter["id"]))
        )
    assert "meter.approved" in actions

    placed = await place(client, member, side="sell", quantity_kwh=1, limit_price="0.5", epoch=NEXT)
    assert placed["status"] == "open"
    again = await client.post(
        f"{API}/meters/{meter['id']}/readings", json=reading(NOW), headers=member.headers
    )
    assert again.json()["accepted"] == 1
    # Nobody sets a meter back to pending.
    back = await client.put(
        f"{API}/meters/{meter['id']}/status", json={"status": "pending"}, headers=operator.headers
    )
    assert back.status_code == 422


async def test_staff_registrations_and_auto_regions_are_active_at_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    gated = await _region_with(client, runtime, admin, "operator")
    member = await signed_in(client, runtime, region=gated)
    by_staff = await make_meter(client, operator, region=gated, owner_id=str(member.id))
    assert by_staff["status"] == "active"

    auto = await _region_with(client, runtime, admin, None)
    other = await signed_in(client, runtime, region=auto)
    assert (await make_meter(client, other, region=auto))["status"] == "active"
    # Omitting the policy on a later PUT keeps it.
    kept = await client.put(
        f"{API}/market/regions/{gated}",
        json={"mechanism": "auction", "min_price": "0.01", "max_price": "1", "fee_bps": 50},
        headers=admin.headers,
    )
    assert kept.json()["meter_approval"] == "operator"
