from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.meters.jobs import mark_offline
from gridex.meters.models import MeterStatusEvent
from tests.factories import API, login, new_region, signed_in
from tests.meters.helpers import make_meter, reading

# A Monday, midnight UTC.
MONDAY = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


async def test_stats_analytics_and_compare(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    # Two weeks of hourly data: 1 kWh/h consumed, solar 2 kWh/h from 10:00 to 14:00 UTC,
    # weekends consume double.
    end = MONDAY + timedelta(days=7)
    clock.set(end)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner, capacity_kw=20)
    start = MONDAY - timedelta(days=7)
    items = []
    t = start
    while t < end:
        weekend = t.weekday() >= 5
        solar = 10 <= t.hour < 14
        items.append(
            reading(
                t + timedelta(minutes=15),
                0.5 if weekend else 0.25,
                0.5 if solar else 0.0,
                voltage=230.0,
                current=4.0,
            )
        )
        t += timedelta(minutes=15)
    url = f"{API}/meters/{meter['id']}"
    for i in range(0, len(items), 5000):
        stored = await client.post(
            f"{url}/readings", json={"readings": items[i : i + 5000]}, headers=owner.headers
        )
        assert stored.json()["accepted"] == len(items[i : i + 5000])
    window = {"from": utc_iso(start), "to": utc_iso(end)}

    stats = (await client.get(f"{url}/stats", params=window, headers=owner.headers)).json()
    # Per week: 5 weekdays x 24 kWh + 2 weekend days x 48 kWh = 216 kWh; two weeks.
    assert stats["readings"] == 14 * 96
    assert stats["total_consumed_kwh"] == 432.0
    assert stats["total_produced_kwh"] == 14 * 8.0
    assert stats["max_power_kw"] == 2.0
    assert stats["min_power_kw"] == 1.0
    assert stats["average_voltage"] == 230.0
    assert stats["average_current"] == 4.0

    analytics = (await client.get(f"{url}/analytics", params=window, headers=owner.headers)).json()
    assert set(analytics) == {
        "meter_id",
        "period",
        "consumption_analytics",
        "usage_patterns",
        "environmental_impact",
    }
    assert analytics["period"] == {"start": utc_iso(start), "end": utc_iso(end)}
    ca = analytics["consumption_analytics"]
    assert set(ca) == {
        "total_consumed_kwh",
        "total_produced_kwh",
        "net_consumption_kwh",
        "average_daily_consumption",
        "peak_consumption_kw",
        "efficiency_rating",
    }
    assert ca["total_consumed_kwh"] == 432.0
    assert ca["net_consumption_kwh"] == 432.0 - 112.0
    assert ca["average_daily_consumption"] == round(432 / 14, 3)
    assert ca["peak_consumption_kw"] == 2.0
    assert ca["efficiency_rating"] == "A"  # load factor 1.29 / 2
    patterns = analytics["usage_patterns"]
    assert patterns["weekend_vs_weekday_ratio"] == 2.0
    assert len(patterns["peak_hours"]) == 3
    assert len(patterns["off_peak_hours"]) == 3
    env = analytics["environmental_impact"]
    assert env["carbon_offset_kg"] == 44.8
    # Hour by hour, solar covers at most the consumption of that hour: 4 h x 1 kWh on a
    # weekday, 4 h x 2 kWh on a weekend day; 72 of 432 kWh.
    assert env["renewable_energy_percent"] == round(72 / 432 * 100, 1)
    # Solar covers the whole hour 4 hours a day: 56 of the 336 hours.
    assert env["grid_independence_score"] == round(56 / 336 * 100, 1)

    week = (
        await client.get(f"{url}/compare", params={"period": "week"}, headers=owner.headers)
    ).json()
    assert week["current"]["start"] == utc_iso(end)
    assert week["previous"]["start"] == utc_iso(MONDAY)
    day = (
        await client.get(f"{url}/compare", params={"period": "month"}, headers=owner.headers)
    ).json()
    assert day["period"] == "month"
    assert set(day["change_percent"]) == {"consumed", "produced", "net"}


async def test_analytics_average_over_the_data_present_and_count_night_imports(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    # One week of a house in the default 30-day window: 0.5 kWh per hour all day, solar
    # 1.5 kWh per hour from 10:00 to 16:00 UTC, nothing the rest of the time.
    end = MONDAY + timedelta(days=7)
    clock.set(end)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner, capacity_kw=20)
    items = []
    t = MONDAY
    while t < end:
        solar = 10 <= t.hour < 16
        items.append(reading(t + timedelta(minutes=15), 0.125, 0.375 if solar else 0.0))
        t += timedelta(minutes=15)
    url = f"{API}/meters/{meter['id']}"
    stored = await client.post(f"{url}/readings", json={"readings": items}, headers=owner.headers)
    assert stored.json()["accepted"] == len(items)

    analytics = (await client.get(f"{url}/analytics", headers=owner.headers)).json()
    ca = analytics["consumption_analytics"]
    assert ca["total_consumed_kwh"] == 84.0
    assert ca["average_daily_consumption"] == 12.0  # 84 kWh over 7 days, not 30
    assert ca["efficiency_rating"] == "A"  # a flat load: average = peak
    env = analytics["environmental_impact"]
    # 6 of every 24 hours are covered by own production: 6 x 0.5 of 12 kWh a day.
    assert env["renewable_energy_percent"] == 25.0
    assert env["grid_independence_score"] == 25.0


async def test_region_telemetry(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(MONDAY)
    region = await new_region(runtime)
    operator = await signed_in(client, runtime, Role.operator)
    owner = await signed_in(client, runtime)
    big = await make_meter(client, owner, region=region, serial=f"BIG-{region}")
    small = await make_meter(client, owner, region=region, serial=f"SMALL-{region}")
    await make_meter(client, owner, region="elsewhere")
    for meter, kwh in ((big, 1.0), (small, 0.25)):
        await client.post(
            f"{API}/meters/{meter['id']}/readings",
            json={
                "readings": [
                    reading(MONDAY - timedelta(minutes=15 * i), kwh, 0.125) for i in range(4)
                ]
            },
            headers=owner.headers,
        )
    base = f"{API}/telemetry/regions/{region}"
    assert (await client.get(f"{base}/stats", headers=owner.headers)).status_code == 403
    stats = (await client.get(f"{base}/stats", headers=operator.headers)).json()
    assert (stats["meters"], stats["meters_active"], stats["meters_online"]) == (2, 2, 2)
    assert stats["total_consumed_kwh"] == 5.0
    assert stats["total_produced_kwh"] == 1.0
    assert stats["peak_load_kw"] == 5.0  # 1.25 kWh in a quarter
    top = (
        await client.get(f"{base}/top-consumers", params={"limit": 1}, headers=operator.headers)
    ).json()
    assert [i["serial"] for i in top["items"]] == [big["serial"]]
    assert top["items"][0]["consumed_kwh"] == 4.0
    realtime = (await client.get(f"{base}/realtime", headers=operator.headers)).json()
    assert realtime["interval_start"] == utc_iso(MONDAY - timedelta(minutes=15))
    assert realtime["consumption_kw"] == 5.0
    assert realtime["production_kw"] == 1.0
    assert realtime["net_load_kw"] == 4.0
    assert realtime["meters_reporting"] == 2


async def test_liveness_job(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(MONDAY)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner)
    url = f"{API}/meters/{meter['id']}"
    await client.post(f"{url}/readings", json=reading(MONDAY), headers=owner.headers)
    assert (await client.get(url, headers=owner.headers)).json()["online"] is True

    # Two missed intervals: still online; the third: offline, once.
    clock.set(MONDAY + timedelta(minutes=44))
    assert await mark_offline(runtime) == 0
    clock.set(MONDAY + timedelta(minutes=46))
    assert await mark_offline(runtime) == 1
    assert await mark_offline(runtime) == 0
    owner = await login(client, owner)  # the access token expired meanwhile
    assert (await client.get(url, headers=owner.headers)).json()["online"] is False

    # An old backfilled reading does not bring it back; a fresh one does.
    await client.post(
        f"{url}/readings", json=reading(MONDAY - timedelta(hours=5)), headers=owner.headers
    )
    assert (await client.get(url, headers=owner.headers)).json()["online"] is False
    await client.post(
        f"{url}/readings", json=reading(MONDAY + timedelta(minutes=45)), headers=owner.headers
    )
    assert (await client.get(url, headers=owner.headers)).json()["online"] is True

    async with runtime.db.sessionmaker() as session:
        events = list(
            await session.scalars(
                select(MeterStatusEvent)
                .where(MeterStatusEvent.meter_id == uuid.UUID(meter["id"]))
                .order_by(MeterStatusEvent.at)
            )
        )
    assert [(e.status, e.reason) for e in events] == [
        ("online", "reading"),
        ("offline", "missed_intervals"),
        ("online", "reading"),
    ]


async def test_commands_need_mqtt(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner)
    response = await client.post(
        f"{API}/meters/{meter['id']}/commands", json={"command": "reboot"}, headers=owner.headers
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "GRIDEX_MQTT_URL" in response.json()["error"]["message"]
