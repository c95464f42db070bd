"""Runtime configuration: validated, audited, and in force on a second worker of the same
database without a restart; demo data on request."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import httpx
import pytest

from gridex.app import build_runtime, create_app
from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.runtimeconfig.service import refresh, watch
from tests.conftest import make_settings
from tests.factories import API, signed_in


async def _region(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, object]:
    response = await http.get(f"{API}/market/regions/north", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_change_applies_on_another_worker_and_is_audited(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, database_url: str
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    other_clock = FrozenClock(clock.now())
    other = build_runtime(make_settings(database_url), other_clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=other)), base_url="http://test"
    ) as second:
        before = await _region(second, admin.headers)
        assert before["fee_bps"] == 100
        current = await second.get(f"{API}/market/epochs/current", headers=admin.headers)
        open_epoch = current.json()["open"]

        response = await client.put(
            f"{API}/admin/config",
            json={"fee_bps": 250, "gate_closure_seconds": 60, "offline_after_intervals": 5},
            headers=admin.headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == 1
        assert body["settings"]["fee_bps"]["value"] == 250
        assert body["settings"]["fee_bps"]["source"] == "runtime"
        assert body["settings"]["fee_bps"]["default"] == 100
        # This worker applies it at once; the other one within its TTL (2 s here).
        assert (await _region(client, admin.headers))["fee_bps"] == 250
        assert runtime.settings.offline_after_intervals == 5
        other_clock.advance(timedelta(seconds=3))
        assert (await _region(second, admin.headers))["fee_bps"] == 250
        assert other.settings.gate_closure_seconds == 60
        assert other.settings.offline_after_intervals == 5
        later = (await second.get(f"{API}/market/epochs/current", headers=admin.headers)).json()
        # A new epoch's gate closes 60 s before its start now (it was 300 s).
        start = datetime.fromisoformat(later["open"]["start"])
        assert datetime.fromisoformat(later["open"]["gate_closure"]) == start - timedelta(
            seconds=60
        )
        assert open_epoch["gate_closure"] != later["open"]["gate_closure"]

        # Back to the environment's value with null.
        reset = await second.put(
            f"{API}/admin/config", json={"fee_bps": None}, headers=admin.headers
        )
        assert reset.json()["settings"]["fee_bps"]["source"] == "environment"
        clock.advance(timedelta(seconds=3))
        assert (await _region(client, admin.headers))["fee_bps"] == 100
    await other.db.dispose()

    audit = await client.get(
        f"{API}/admin/audit-logs", params={"action": "config.updated"}, headers=admin.headers
    )
    entries = audit.json()["items"]
    assert len(entries) == 2
    first = entries[-1]
    assert first["actor_id"] == str(admin.id)
    assert first["details"]["changes"]["fee_bps"] == {"old": None, "new": 250, "default": 100}
    assert entries[0]["details"]["changes"]["fee_bps"]["old"] == 250


async def test_bad_values_change_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    for body in (
        {"fee_bps": 10_001},
        {"fee_bps": "abc"},
        {"fee_bps": 1.5},
        {"no_such_setting": 1},
        {"offline_after_intervals": 0},
        {"grid_emission_factor_kg_per_kwh": "0.1234567"},
        {"region_emission_factors": {"nowhere": "0.2"}},
        {"alert_voltage_min": "260"},  # above the default maximum of 253
        {"fee_bps": 50, "gate_closure_seconds": -1},  # all or nothing
        {},
    ):
        response = await client.put(f"{API}/admin/config", json=body, headers=admin.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    config = (await client.get(f"{API}/admin/config", headers=admin.headers)).json()
    assert config["version"] == 0
    assert all(s["source"] == "environment" for s in config["settings"].values())
    forbidden = await client.put(
        f"{API}/admin/config", json={"fee_bps": 1}, headers=operator.headers
    )
    assert forbidden.status_code == 403


@pytest.mark.skipif(not os.environ.get("GRIDEX_TEST_REDIS_URL"), reason="needs Redis")
async def test_redis_event_marks_other_workers_stale_at_once(
    runtime: Runtime, database_url: str
) -> None:
    import asyncio

    url = os.environ["GRIDEX_TEST_REDIS_URL"]
    one = build_runtime(make_settings(database_url, redis_url=url), FrozenClock())
    two = build_runtime(make_settings(database_url, redis_url=url), FrozenClock())
    await refresh(two)
    watcher = asyncio.create_task(watch(two))
    await asyncio.sleep(0.2)  # subscribed
    admin = await signed_in(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime=one)), base_url="http://t"
        ),
        one,
        Role.admin,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=one)), base_url="http://t"
    ) as http:
        response = await http.put(
            f"{API}/admin/config", json={"market_horizon_hours": 12}, headers=admin.headers
        )
        assert response.status_code == 200
    await one.pubsub.flush()
    for _ in range(50):  # the event arrives over Redis; no clock moves on worker two
        if await refresh(two) and two.settings.market_horizon_hours == 12:
            break
        await asyncio.sleep(0.05)
    assert two.settings.market_horizon_hours == 12
    watcher.cancel()
    for rt in (one, two):
        await rt.pubsub.close()
        await rt.db.dispose()


async def test_demo_data_once_and_never_in_production(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await signed_in(client, runtime, Role.admin, username="ops-admin")
    created = await client.post(f"{API}/admin/demo-data", headers=admin.headers)
    assert created.status_code == 201, created.text
    assert any("DEMO-ALICE-01" in line for line in created.json()["lines"])
    again = await client.post(f"{API}/admin/demo-data", headers=admin.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "CONFLICT"
    runtime.settings.env = "production"
    try:
        refused = await client.post(f"{API}/admin/demo-data", headers=admin.headers)
    finally:
        runtime.settings.env = "test"
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "FORBIDDEN"
