"""Quarter-hours of 15-minute readings are served from the readings, shorter ones from rollups:
every reader gives the same answers either way.

Two meters, each alone in its region, carry the same energy per quarter: one in 15-minute
readings (served from ``meter_readings``), one in three 5-minute readings (served from rollup
rows), with the same power in every reading. Everything but reading counts must agree, with
quarter edges at both ends of the ranges so that covers mix quarters with coarser buckets.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.meters.models import Granularity, MeterRollup
from tests.factories import API, Account, new_region, signed_in
from tests.meters.helpers import NOW, four_quarters, make_meter, reading

START = NOW - timedelta(days=2)
QUARTERS = 2 * 96  # up to NOW: both meters are online
# A range that starts and ends inside an hour (covers with quarter edges), widened to quarters.
FIRST = NOW - timedelta(hours=36, minutes=30)
LAST_END = NOW - timedelta(minutes=75)
WINDOW = {
    "from": utc_iso(FIRST + timedelta(minutes=5)),
    "to": utc_iso(LAST_END - timedelta(minutes=5)),
}
# Not counted: how many readings made the answer, and what is keyed by the meter.
_COUNTS = {"readings", "average_consumed_kwh_per_reading", "average_produced_kwh_per_reading"}


def _quarter_wh(i: int) -> tuple[int, int]:
    """(consumed, produced) Wh of quarter ``i``, divisible by 3 for the 5-minute meter."""
    return 300 * (i % 5), 150 * (i % 3)


def _readings(interval: int) -> list[dict[str, Any]]:
    per_quarter = 15 // interval
    out = []
    for i in range(QUARTERS):
        consumed, produced = _quarter_wh(i)
        for k in range(per_quarter):
            end = START + timedelta(minutes=15 * i + interval * (k + 1))
            out.append(
                reading(
                    end,
                    consumed / per_quarter / 1000,
                    produced / per_quarter / 1000,
                    interval_minutes=interval,
                    voltage=230.5,
                    current=4.25,
                )
            )
    return out


def _without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``body`` without ``keys`` and the reading counts, at every level."""
    return {
        k: _without(v, *keys) if isinstance(v, dict) else v
        for k, v in body.items()
        if k not in keys and k not in _COUNTS
    }


async def _meter(
    client: httpx.AsyncClient, rt: Runtime, owner: Account, interval: int
) -> tuple[dict[str, Any], str]:
    region = await new_region(rt, f"q{interval}")
    meter = await make_meter(client, owner, region=region, interval_minutes=interval)
    stored = await client.post(
        f"{API}/meters/{meter['id']}/readings",
        json={"readings": _readings(interval)},
        headers=owner.headers,
    )
    assert stored.json() == {"accepted": QUARTERS * 15 // interval, "duplicates": 0, "rejected": []}
    return meter, region


async def _get(client: httpx.AsyncClient, account: Account, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _pair(
    client: httpx.AsyncClient, account: Account, urls: tuple[str, str], **params: Any
) -> tuple[Any, Any]:
    return (
        await _get(client, account, urls[0], **params),
        await _get(client, account, urls[1], **params),
    )


async def _quarter_rows(runtime: Runtime, meter_id: str) -> int:
    async with runtime.db.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(
                MeterRollup.meter_id == uuid.UUID(meter_id),
                MeterRollup.granularity == Granularity.m15,
            )
        )
    return int(count or 0)


async def test_quarter_hours_from_readings_equal_rollups(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    quarterly, quarterly_region = await _meter(client, runtime, owner, 15)
    fine, fine_region = await _meter(client, runtime, owner, 5)
    # Only the meter reporting more often keeps quarter-hour rollup rows.
    assert await _quarter_rows(runtime, quarterly["id"]) == 0
    assert await _quarter_rows(runtime, fine["id"]) == QUARTERS

    def meter_url(meter: dict[str, Any], path: str) -> str:
        return f"{API}/meters/{meter['id']}/{path}"

    def both(path: str) -> tuple[str, str]:
        return meter_url(quarterly, path), meter_url(fine, path)

    for interval in ("15m", "1h", "1d"):
        a, b = await _pair(client, owner, both("readings"), interval=interval, **WINDOW)
        assert a["points"] == b["points"]
        assert a["points"]
    series = await _get(client, owner, meter_url(quarterly, "readings"), interval="15m", **WINDOW)
    first = series["points"][0]
    assert first["start"] == utc_iso(FIRST)
    consumed, produced = _quarter_wh((FIRST - START) // timedelta(minutes=15))
    assert consumed > 0
    assert (first["consumed_kwh"], first["produced_kwh"]) == (consumed / 1000, produced / 1000)
    assert first["peak_kw"] == consumed * 4 / 1000
    assert len(series["points"]) == (LAST_END - FIRST) // timedelta(minutes=15)

    # Pages of a quarter-hour series with the cursor.
    pages: list[list[Any]] = [[], []]
    for n, meter in enumerate((quarterly, fine)):
        after: str | None = None
        while True:
            params = {"interval": "15m", "limit": 50, **WINDOW}
            if after:
                params["after"] = after
            page = await _get(client, owner, meter_url(meter, "readings"), **params)
            pages[n].append(page["points"])
            after = page["next_after"]
            if after is None:
                break
    assert pages[0] == pages[1]
    assert len(pages[0]) == 3

    stats = await _pair(client, owner, both("stats"), **WINDOW)
    assert _without(stats[0], "meter_id") == _without(stats[1], "meter_id")
    assert stats[0]["readings"] * 3 == stats[1]["readings"]
    assert stats[0]["average_voltage"] == 230.5
    assert stats[0]["max_power_kw"] == 4.8
    analytics = await _pair(client, owner, both("analytics"), **WINDOW)
    assert _without(analytics[0], "meter_id") == _without(analytics[1], "meter_id")
    for period in ("day", "week", "month"):
        compared = await _pair(client, owner, both("compare"), period=period)
        assert _without(compared[0], "meter_id") == _without(compared[1], "meter_id")
        assert compared[0]["current"]["consumed_kwh"] > 0

    base = f"{API}/telemetry/regions"
    for path, params in (
        ("stats", WINDOW),
        ("top-consumers", WINDOW),
        ("realtime", {}),
    ):
        urls = (f"{base}/{quarterly_region}/{path}", f"{base}/{fine_region}/{path}")
        a, b = await _pair(client, operator, urls, **params)
        if path == "top-consumers":
            a = [_without(i, "meter_id", "serial") for i in a["items"]]
            b = [_without(i, "meter_id", "serial") for i in b["items"]]
            assert len(a) == 1
        else:
            a, b = _without(a, "region"), _without(b, "region")
        assert a == b
    realtime = await _get(client, operator, f"{base}/{quarterly_region}/realtime")
    assert realtime["meters_reporting"] == 1
    assert realtime["interval_start"] == utc_iso(NOW - timedelta(minutes=15))
    assert realtime["consumption_kw"] == _quarter_wh(QUARTERS - 1)[0] * 4 / 1000
    peak = await _get(client, operator, f"{base}/{quarterly_region}/stats", **WINDOW)
    assert peak["peak_load_kw"] == 4.8


async def test_correcting_a_quarter_hour_reading(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    """A corrected 15-minute reading changes its quarter, hour and day at once; made a
    5-minute reading, it gets a quarter-hour rollup row, and back again it loses it."""
    owner, operator, meter, ends = await four_quarters(client, runtime, clock)
    url = f"{API}/meters/{meter['id']}/readings"
    window = {"from": utc_iso(NOW - timedelta(hours=1)), "to": utc_iso(NOW)}

    async def consumed(interval: str) -> list[float]:
        body = await _get(client, owner, url, interval=interval, **window)
        return [p["consumed_kwh"] for p in body["points"]]

    target = ends[1]
    body: dict[str, Any] = {
        "energy_consumed_kwh": 0.25,
        "energy_produced_kwh": 0.0,
        "reason": "fix",
    }
    corrected = await client.put(f"{url}/{utc_iso(target)}", json=body, headers=operator.headers)
    assert corrected.status_code == 200, corrected.text
    assert await consumed("15m") == [0.5, 0.5, 0.25, 0.5]
    assert await consumed("1h") == [1.75]
    assert await _quarter_rows(runtime, meter["id"]) == 0

    shorter = {**body, "interval_minutes": 5, "energy_consumed_kwh": 0.125}
    corrected = await client.put(f"{url}/{utc_iso(target)}", json=shorter, headers=operator.headers)
    assert corrected.status_code == 200, corrected.text
    assert await consumed("15m") == [0.5, 0.5, 0.125, 0.5]
    assert await consumed("1h") == [1.625]
    assert await _quarter_rows(runtime, meter["id"]) == 1

    back = {**body, "interval_minutes": 15}
    corrected = await client.put(f"{url}/{utc_iso(target)}", json=back, headers=operator.headers)
    assert corrected.status_code == 200, corrected.text
    assert await consumed("15m") == [0.5, 0.5, 0.25, 0.5]
    assert await _quarter_rows(runtime, meter["id"]) == 0
    stats = await _get(client, owner, f"{API}/meters/{meter['id']}/stats", **window)
    assert (stats["readings"], stats["total_consumed_kwh"]) == (4, 1.75)
