"""Rollups equal the sums of raw readings, whatever arrives (property test), and follow
corrections in the same transaction."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gridex.audit.models import AuditLog
from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.meters.models import Granularity, MeterReading, MeterRollup, ReadingCorrection
from gridex.meters.rollups import GRANULARITIES, bucket_start, has_quarter_rollup
from tests.factories import API, Account, signed_in
from tests.meters.helpers import NOW, four_quarters, make_key, make_meter, reading

# Readings spread over ~40 days so that every granularity has several buckets, including a
# month boundary.
_reading = st.tuples(
    st.integers(min_value=1, max_value=40 * 24 * 12),  # 5-minute steps back from NOW
    st.sampled_from([1, 5, 15]),
    st.integers(min_value=0, max_value=2500),  # Wh (capacity 10 kW x 15 min)
    st.integers(min_value=0, max_value=2500),
)


async def _rollups(
    rt: Runtime, meter_id: str | uuid.UUID
) -> dict[tuple[str, datetime], tuple[int, int, int]]:
    async with rt.db.sessionmaker() as session:
        rows = await session.scalars(
            select(MeterRollup).where(MeterRollup.meter_id == uuid.UUID(str(meter_id)))
        )
        return {
            (r.granularity, r.bucket_start): (r.consumed_wh, r.produced_wh, r.readings)
            for r in rows
        }


async def _expected(
    rt: Runtime, meter_id: str | uuid.UUID
) -> dict[tuple[str, datetime], tuple[int, int, int]]:
    sums: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0])
    async with rt.db.sessionmaker() as session:
        for r in await session.scalars(
            select(MeterReading).where(MeterReading.meter_id == uuid.UUID(str(meter_id)))
        ):
            start = r.timestamp - timedelta(minutes=r.interval_minutes)
            for g in GRANULARITIES:
                if g == Granularity.m15 and not has_quarter_rollup(r.interval_minutes):
                    continue  # a 15-minute reading is its own quarter
                acc = sums[(g.value, bucket_start(g, start))]
                acc[0] += r.consumed_wh
                acc[1] += r.produced_wh
                acc[2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in sums.items()}


_accounts: dict[int, tuple[Account, dict[str, str]]] = {}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(_reading, max_size=40), min_size=1, max_size=4))
async def test_rollups_equal_sum_of_raw_readings(
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    batches: list[list[tuple[int, int, int, int]]],
) -> None:
    clock.set(NOW)
    # Accounts are shared by the examples of one run (signing in is the slow part); each
    # example gets a fresh meter.
    cached = _accounts.get(id(runtime))
    if cached is None:
        owner = await signed_in(client, runtime)
        operator = await signed_in(client, runtime, Role.operator)
        cached = _accounts[id(runtime)] = (
            owner,
            await make_key(client, operator, ["readings:write"]),
        )
    owner, key = cached
    meter = await make_meter(client, owner, capacity_kw=10)
    for batch in batches:
        items = []
        for steps, interval, consumed, produced in batch:
            end = NOW - timedelta(minutes=5 * steps)
            end -= timedelta(minutes=end.minute % interval)
            items.append(
                {
                    "meter_serial": meter["serial"],
                    **reading(end, consumed / 1000, produced / 1000, interval_minutes=interval),
                }
            )
        response = await client.post(f"{API}/readings/batch", json={"readings": items}, headers=key)
        assert response.status_code == 200, response.text
    assert await _rollups(runtime, meter["id"]) == await _expected(runtime, meter["id"])

    # Every coarse series sums to the same totals as the raw data.
    params = {"from": utc_iso(NOW - timedelta(days=41)), "to": utc_iso(NOW), "limit": 10_000}
    totals = set()
    for interval in ("raw", "15m", "1h", "1d", "1mo"):
        series = await client.get(
            f"{API}/meters/{meter['id']}/readings",
            params={**params, "interval": interval},
            headers=owner.headers,
        )
        assert series.status_code == 200, series.text
        points = series.json()["points"]
        totals.add(
            (
                round(sum(p["consumed_kwh"] for p in points) * 1000),
                round(sum(p["produced_kwh"] for p in points) * 1000),
            )
        )
    assert len(totals) == 1


async def test_series_shape_and_cursor(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner, capacity_kw=20)
    start = NOW - timedelta(hours=3)
    body = {
        "readings": [
            reading(
                start + timedelta(minutes=5 * i), round(0.1 * (i % 4), 3), 0.05, interval_minutes=5
            )
            for i in range(1, 37)
        ]
    }
    stored = await client.post(
        f"{API}/meters/{meter['id']}/readings", json=body, headers=owner.headers
    )
    assert stored.json()["accepted"] == 36
    url = f"{API}/meters/{meter['id']}/readings"
    window = {"from": utc_iso(start), "to": utc_iso(NOW)}
    hourly = (
        await client.get(url, params={**window, "interval": "1h"}, headers=owner.headers)
    ).json()
    assert hourly["meter_id"] == meter["id"]
    assert hourly["interval"] == "1h"
    assert [p["start"] for p in hourly["points"]] == [
        utc_iso(start + timedelta(hours=h)) for h in range(3)
    ]
    first = hourly["points"][0]
    # 12 readings of 0, 0.1, 0.2, 0.3 kWh; 0.05 kWh produced each.
    assert first == {
        "start": utc_iso(start),
        "consumed_kwh": 1.8,
        "produced_kwh": 0.6,
        "net_kwh": 1.2,
        "peak_kw": 3.6,  # 0.3 kWh in 5 minutes
    }
    assert hourly["next_after"] is None
    page = (
        await client.get(
            url, params={**window, "interval": "15m", "limit": 5}, headers=owner.headers
        )
    ).json()
    assert len(page["points"]) == 5
    rest = (
        await client.get(
            url,
            params={**window, "interval": "15m", "after": page["next_after"]},
            headers=owner.headers,
        )
    ).json()
    assert len(rest["points"]) == 7
    assert rest["points"][0]["start"] == utc_iso(start + timedelta(minutes=75))
    raw = (await client.get(url, params={**window, "limit": 1000}, headers=owner.headers)).json()
    assert len(raw["points"]) == 36
    assert raw["points"][0]["start"] == utc_iso(start)
    bad = await client.get(url, params={"interval": "2h"}, headers=owner.headers)
    assert bad.status_code == 422
    naive = await client.get(url, params={"from": "2026-01-01T00:00:00"}, headers=owner.headers)
    assert naive.status_code == 422


async def test_correction_keeps_history_and_adjusts_rollups(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    owner, operator, meter, ends = await four_quarters(client, runtime, clock)
    target = utc_iso(ends[1])
    url = f"{API}/meters/{meter['id']}/readings/{target}"
    body: dict[str, Any] = {
        "energy_consumed_kwh": 0.75,
        "energy_produced_kwh": 0.0,
        "reason": "meter replaced, value from the utility",
    }
    assert (await client.put(url, json=body, headers=owner.headers)).status_code == 403
    corrected = await client.put(url, json=body, headers=operator.headers)
    assert corrected.status_code == 200, corrected.text
    out = corrected.json()
    assert out["reading"]["energy_consumed_kwh"] == 0.75
    assert out["reading"]["revision"] == 1
    assert out["previous"]["energy_consumed_kwh"] == 0.5
    assert out["corrected_by"] == str(operator.id)
    assert await _rollups(runtime, meter["id"]) == await _expected(runtime, meter["id"])
    daily = await client.get(
        f"{API}/meters/{meter['id']}/readings",
        params={"interval": "1d", "from": utc_iso(NOW - timedelta(days=1)), "to": utc_iso(NOW)},
        headers=owner.headers,
    )
    assert daily.json()["points"][0]["consumed_kwh"] == 2.25
    assert daily.json()["points"][0]["produced_kwh"] == 0.3

    # An API key of an operator with readings:correct may correct; the reason is required.
    key = await make_key(client, operator, ["readings:correct"])
    by_key = await client.put(url, json={**body, "energy_consumed_kwh": 0.7}, headers=key)
    assert by_key.status_code == 200
    assert (
        await client.put(
            url, json={"energy_consumed_kwh": 1, "energy_produced_kwh": 0}, headers=key
        )
    ).status_code == 422
    missing = await client.put(
        f"{API}/meters/{meter['id']}/readings/{utc_iso(NOW - timedelta(days=3))}",
        json=body,
        headers=operator.headers,
    )
    assert missing.status_code == 404
    async with runtime.db.sessionmaker() as session:
        history = list(
            await session.scalars(
                select(ReadingCorrection)
                .where(ReadingCorrection.meter_id == uuid.UUID(meter["id"]))
                .order_by(ReadingCorrection.corrected_at, ReadingCorrection.new_consumed_wh.desc())
            )
        )
        audited = await session.scalar(
            select(AuditLog).where(
                AuditLog.action == "reading.corrected", AuditLog.actor_id == operator.id
            )
        )
    assert [(c.old_consumed_wh, c.new_consumed_wh) for c in history] == [(500, 750), (750, 700)]
    assert history[1].actor_type == "api_key"
    assert audited is not None
    assert await _rollups(runtime, meter["id"]) == await _expected(runtime, meter["id"])
