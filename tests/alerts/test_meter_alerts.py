"""Meter alerts from committed facts: liveness, profile anomalies, voltage, rejections; one open
alert per type and subject; auto-resolution; no alert lost to a crash after the commit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gridex.alerts import jobs as alert_jobs
from gridex.alerts import service as alert_service
from gridex.alerts.jobs import evaluate
from gridex.alerts.models import Alert
from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.pubsub import MemoryPubSub
from gridex.core.runtime import Runtime
from gridex.meters.jobs import mark_offline
from gridex.meters.models import MeterStatusEvent
from gridex.notifications.models import Notification
from tests.alerts.helpers import alerts_of, notifications_of, run_jobs, send
from tests.factories import API, Account, signed_in
from tests.meters.helpers import NOW, make_meter, reading


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"access_token_minutes": 24 * 60, "alert_voltage_ranges": {"south": [110, 127]}}


async def count_alerts(rt: Runtime, **where: Any) -> int:
    async with rt.db.sessionmaker() as session:
        query = select(func.count()).select_from(Alert).filter_by(**where)
        return int(await session.scalar(query) or 0)


async def owner_with_meter(
    client: httpx.AsyncClient, rt: Runtime, **meter: Any
) -> tuple[Account, dict[str, Any]]:
    owner = await signed_in(client, rt)
    return owner, await make_meter(client, owner, **meter)


async def go_offline(client: httpx.AsyncClient, rt: Runtime, clock: FrozenClock) -> None:
    """Three missed 15-minute intervals after the last reading, then the liveness job."""
    clock.set(NOW + timedelta(minutes=46))
    assert await mark_offline(rt) >= 1


async def test_device_offline_is_raised_once_and_resolves_when_the_meter_reports(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner, meter = await owner_with_meter(client, runtime)
    await send(client, owner, meter, reading(NOW))
    await go_offline(client, runtime, clock)

    await run_jobs(runtime)
    [alert] = await alerts_of(client, owner)
    assert alert["type"] == "device_offline"
    assert alert["status"] == "open"
    assert alert["severity"] == "warning"
    assert alert["subject"] == {"kind": "meter", "id": meter["id"]}
    assert alert["region"] == "north"
    assert alert["details"]["serial"] == meter["serial"]
    [note] = await notifications_of(client, owner)
    assert note["type"] == "device_offline"
    assert note["data"]["alert_id"] == alert["id"]

    # The job runs again (and again): the fact counted once, one open alert, one notification.
    await run_jobs(runtime)
    await run_jobs(runtime)
    assert await count_alerts(runtime, type="device_offline") == 1
    assert len(await notifications_of(client, owner)) == 1

    # The meter reports again: the online transition resolves the alert by itself.
    clock.set(NOW + timedelta(minutes=60))
    await send(client, owner, meter, reading(NOW + timedelta(minutes=60)))
    await run_jobs(runtime)
    [resolved] = await alerts_of(client, owner)
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None
    assert resolved["resolved_by"] is None
    assert resolved["auto_resolved"] is True

    # A second outage is a new alert.
    clock.set(NOW + timedelta(minutes=60 + 46))
    assert await mark_offline(runtime) == 1
    await run_jobs(runtime)
    assert [a["status"] for a in await alerts_of(client, owner)] == ["open", "resolved"]


class ProcessKilled(BaseException):
    """Stands for the process dying: not an ``Exception``, nothing on the way catches it."""


class DyingPubSub(MemoryPubSub):
    def publish_nowait(self, channel: str, message: dict[str, Any]) -> None:
        raise ProcessKilled


async def test_a_crash_between_commit_and_publish_loses_no_alert(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner, meter = await owner_with_meter(client, runtime)
    await send(client, owner, meter, reading(NOW))
    live = runtime.pubsub.subscribe(f"meter:{meter['id']}")

    # The liveness job commits the offline transition and the process dies before it
    # publishes: the live event never goes out.
    clock.set(NOW + timedelta(minutes=46))
    healthy, runtime.pubsub = runtime.pubsub, DyingPubSub()
    with pytest.raises(ProcessKilled):
        await mark_offline(runtime)
    runtime.pubsub = healthy
    assert live.queue.empty()
    async with runtime.db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(MeterStatusEvent)) == 2

    # Another worker's alerts job derives the alert from the committed row.
    await evaluate(runtime)
    [alert] = await alerts_of(client, owner)
    assert (alert["type"], alert["status"]) == ("device_offline", "open")
    await live.close()


async def test_an_alerts_run_that_dies_before_its_commit_is_redone_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(NOW)
    owner, meter = await owner_with_meter(client, runtime)
    await send(client, owner, meter, reading(NOW))
    await go_offline(client, runtime, clock)

    real = alert_service.deliver

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("mail server exploded mid-run")

    monkeypatch.setattr(alert_service, "deliver", broken)
    await evaluate(runtime)  # the rule fails and is rolled back: no alert, fact not consumed
    assert await count_alerts(runtime) == 0
    monkeypatch.setattr(alert_service, "deliver", real)
    await evaluate(runtime)
    await evaluate(runtime)
    assert await count_alerts(runtime, type="device_offline") == 1
    async with runtime.db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Notification)) == 1


async def history(
    client: httpx.AsyncClient,
    owner: Account,
    meter: dict[str, Any],
    days: int,
    consumed: float,
    produced: float = 0.0,
) -> None:
    """Readings ending 12:15 and 12:30 on each of the ``days`` days before NOW."""
    rows = [
        reading(NOW - timedelta(days=d) + timedelta(minutes=m), consumed, produced)
        for d in range(1, days + 1)
        for m in (15, 30)
    ]
    result = await send(client, owner, meter, *rows)
    assert result["accepted"] == len(rows), result


async def test_a_consumption_spike_against_the_meters_own_profile(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW + timedelta(minutes=16))
    owner, meter = await owner_with_meter(client, runtime, kind="consumption")
    await history(client, owner, meter, days=5, consumed=0.2)

    # 0.5 kWh against a usual 0.2: 2.5 times, below the factor 3; no alert.
    await send(client, owner, meter, reading(NOW + timedelta(minutes=15), consumed=0.5))
    await run_jobs(runtime)
    assert await alerts_of(client, owner) == []

    clock.set(NOW + timedelta(minutes=31))
    await send(client, owner, meter, reading(NOW + timedelta(minutes=30), consumed=1.2))
    await run_jobs(runtime)
    [spike] = await alerts_of(client, owner)
    assert spike["type"] == "consumption_spike"
    assert spike["details"]["consumed_wh"] == 1200
    assert spike["details"]["expected_wh"] == 200
    assert spike["details"]["profile_days"] == 5

    # A second spike while the first is open counts on it.
    clock.set(NOW + timedelta(minutes=46))
    await send(client, owner, meter, reading(NOW + timedelta(minutes=45), consumed=2.0))
    await run_jobs(runtime)
    [same] = await alerts_of(client, owner)
    assert (same["id"], same["occurrences"], same["details"]["consumed_wh"]) == (
        spike["id"],
        2,
        2000,
    )

    # Back to normal: resolved by itself.
    clock.set(NOW + timedelta(minutes=61))
    await send(client, owner, meter, reading(NOW + timedelta(minutes=60), consumed=0.2))
    await run_jobs(runtime)
    [done] = await alerts_of(client, owner)
    assert done["status"] == "resolved"
    assert done["auto_resolved"]


async def test_no_profile_no_spike(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW + timedelta(minutes=16))
    owner, meter = await owner_with_meter(client, runtime, kind="consumption")
    await history(client, owner, meter, days=2, consumed=0.2)  # fewer than the 3 days needed
    await send(client, owner, meter, reading(NOW + timedelta(minutes=15), consumed=2.0))
    await run_jobs(runtime)
    assert await alerts_of(client, owner) == []


async def test_a_generation_drop_against_the_meters_own_profile(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW + timedelta(minutes=16))
    owner, meter = await owner_with_meter(client, runtime, kind="production")
    await history(client, owner, meter, days=4, consumed=0.0, produced=1.0)
    await send(client, owner, meter, reading(NOW + timedelta(minutes=15), produced=0.1))
    await run_jobs(runtime)
    [drop] = await alerts_of(client, owner)
    assert drop["type"] == "generation_drop"
    assert drop["details"]["produced_wh"] == 100
    assert drop["details"]["expected_wh"] == 1000


async def test_voltage_outside_the_regions_range(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW + timedelta(minutes=1))
    owner, north = await owner_with_meter(client, runtime)
    south = await make_meter(client, owner, region="south")
    # North uses the default 207-253 V, south is configured for 110-127 V.
    await send(client, owner, north, reading(NOW, voltage=258.5))
    await send(client, owner, south, reading(NOW, voltage=120.0))
    await run_jobs(runtime)
    [alert] = await alerts_of(client, owner)
    assert alert["type"] == "voltage_out_of_range"
    assert alert["meter_id"] == north["id"]
    assert alert["details"] == {
        "timestamp": "2026-03-04T12:00:00Z",
        "serial": north["serial"],
        "voltage": 258.5,
        "min": 207.0,
        "max": 253.0,
    }

    clock.set(NOW + timedelta(minutes=16))
    await send(client, owner, north, reading(NOW + timedelta(minutes=15), voltage=231.0))
    await send(client, owner, south, reading(NOW + timedelta(minutes=15), voltage=230.0))
    await run_jobs(runtime)
    alerts = {a["meter_id"]: a for a in await alerts_of(client, owner)}
    assert alerts[north["id"]]["status"] == "resolved"
    assert alerts[south["id"]]["status"] == "open"
    assert alerts[south["id"]]["details"]["max"] == 127.0


async def test_repeated_rejections_from_one_meter(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW + timedelta(minutes=1))
    owner, meter = await owner_with_meter(client, runtime, capacity_kw=1)
    # A 1 kW meter cannot import 5 kWh in 15 minutes: each is rejected and dead-lettered.
    bad = [reading(NOW - timedelta(minutes=15 * i), consumed=5) for i in range(4)]
    assert len((await send(client, owner, meter, *bad))["rejected"]) == 4
    await run_jobs(runtime)
    assert await alerts_of(client, owner) == []  # 4 < the threshold of 5

    await send(client, owner, meter, reading(NOW - timedelta(minutes=60), consumed=5))
    await run_jobs(runtime)
    [alert] = await alerts_of(client, owner)
    assert alert["type"] == "reading_rejected"
    assert alert["details"]["rejected"] == 5

    # An hour without rejections: the window is empty, the alert resolves.
    clock.set(NOW + timedelta(minutes=62))
    await run_jobs(runtime)
    [done] = await alerts_of(client, owner)
    assert done["status"] == "resolved"


async def test_staff_see_by_region_and_owners_only_their_own(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner, meter = await owner_with_meter(client, runtime)
    stranger = await signed_in(client, runtime)
    north_op = await signed_in(client, runtime, Role.operator, region="north")
    south_op = await signed_in(client, runtime, Role.operator, region="south")
    admin = await signed_in(client, runtime, Role.admin, region=None)
    await send(client, owner, meter, reading(NOW))
    await go_offline(client, runtime, clock)
    await run_jobs(runtime)
    [alert] = await alerts_of(client, owner)
    path = f"/api/v1/alerts/{alert['id']}"

    for who, status in (
        (owner, 200),
        (north_op, 200),
        (admin, 200),
        (stranger, 404),
        (south_op, 404),
    ):
        response = await client.get(path, headers=who.headers)
        assert response.status_code == status, (who.username, response.text)
    assert await alerts_of(client, stranger) == []
    assert await alerts_of(client, south_op) == []
    assert [a["id"] for a in await alerts_of(client, north_op, region="north")] == [alert["id"]]
    for who in (stranger, south_op):
        response = await client.post(f"{path}/acknowledge", headers=who.headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_a_burst_larger_than_a_batch_drains_over_runs(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five meters go offline at the same instant and a run reads two facts: the receipts, not
    the time cursor, say which are done, so the next runs take the rest."""
    monkeypatch.setattr(alert_jobs, "BATCH", 2)
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    for _ in range(5):
        await send(client, owner, await make_meter(client, owner), reading(NOW))
    clock.set(NOW + timedelta(minutes=46))
    assert await mark_offline(runtime) == 5
    counts = []
    for _ in range(4):
        await evaluate(runtime)
        counts.append(await count_alerts(runtime, type="device_offline"))
    assert counts == [2, 4, 5, 5]


async def test_a_threshold_changed_through_admin_config_is_what_the_rule_judges(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW + timedelta(minutes=1))
    admin = await signed_in(client, runtime, Role.admin)
    owner, meter = await owner_with_meter(client, runtime)
    changed = await client.put(
        f"{API}/admin/config", json={"alert_voltage_max": 240}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text
    # 245 V is inside the default 207-253 V, outside the 207-240 V set at runtime.
    await send(client, owner, meter, reading(NOW, voltage=245.0))
    await run_jobs(runtime)
    [alert] = await alerts_of(client, owner)
    assert alert["type"] == "voltage_out_of_range"
    assert alert["details"]["max"] == 240.0
