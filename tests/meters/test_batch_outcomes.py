"""Per-item outcomes of a batch that mixes new readings with stored ones, and of identical
batches sent at the same time: each reading is stored once and the rollups stay the raw sums."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.meters.models import MeterReading, RejectedReading
from tests.factories import API, signed_in
from tests.meters.helpers import at_now, make_key, make_meter, quarters, reading
from tests.meters.test_rollups import _expected, _rollups


async def _batch(
    client: httpx.AsyncClient, items: list[dict[str, Any]], key: dict[str, str]
) -> dict[str, Any]:
    response = await client.post(f"{API}/readings/batch", json={"readings": items}, headers=key)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stored_duplicate_and_conflict_among_new_readings(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    head_end = await signed_in(client, runtime, Role.operator)
    key = await make_key(client, head_end, ["readings:write"])
    meter = await make_meter(client, head_end)
    serial = meter["serial"]
    ends = quarters(now - timedelta(hours=6), 20)
    first = await _batch(
        client, [{"meter_serial": serial, **reading(t, 0.2, 0.1)} for t in ends[:10]], key
    )
    assert first == {"accepted": 10, "duplicates": 0, "rejected": []}

    items = [{"meter_serial": serial, **reading(t, 0.3, 0.0)} for t in ends[10:15]]
    items.append({"meter_serial": serial, **reading(ends[2], 0.2, 0.1)})  # 5: stored, same
    items.append({"meter_serial": serial, **reading(ends[4], 0.25, 0.1)})  # 6: stored, other
    items += [{"meter_serial": serial, **reading(t, 0.3, 0.0)} for t in ends[15:]]
    body = await _batch(client, items, key)

    assert (body["accepted"], body["duplicates"]) == (10, 1)
    assert body["rejected"] == [
        {
            "index": 6,
            "code": "READING_CONFLICT",
            "reason": "conflict",
            "message": "A reading with other values is stored for this interval",
        }
    ]
    meter_id = uuid.UUID(meter["id"])
    async with runtime.db.sessionmaker() as session:
        kept = await session.scalar(
            select(MeterReading.consumed_wh).where(
                MeterReading.meter_id == meter_id, MeterReading.timestamp == ends[4]
            )
        )
        stored = await session.scalar(select(func.count()).where(MeterReading.meter_id == meter_id))
        dead = (
            await session.scalars(
                select(RejectedReading.reason).where(RejectedReading.meter_id == meter_id)
            )
        ).all()
    assert (kept, stored, dead) == (200, 20, ["conflict"])
    assert await _rollups(runtime, meter_id) == await _expected(runtime, meter_id)

    # Sent again: nothing new, the same conflict.
    again = await _batch(client, items, key)
    assert (again["accepted"], again["duplicates"]) == (0, 11)
    assert [(r["index"], r["code"]) for r in again["rejected"]] == [(6, "READING_CONFLICT")]
    assert await _rollups(runtime, meter_id) == await _expected(runtime, meter_id)


async def test_identical_batches_at_once_store_each_reading_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    head_end = await signed_in(client, runtime, Role.operator)
    key = await make_key(client, head_end, ["readings:write"])
    meters = [await make_meter(client, head_end) for _ in range(3)]
    ends = quarters(now - timedelta(days=2), 150)
    items = [
        {"meter_serial": m["serial"], **reading(t, (100 + 10 * (i % 7)) / 1000, 0.05)}
        for m in meters
        for i, t in enumerate(ends)
    ]

    bodies = await asyncio.gather(*(_batch(client, items, key) for _ in range(2)))

    total = len(items)
    assert all(b["rejected"] == [] for b in bodies), bodies
    assert all(b["accepted"] + b["duplicates"] == total for b in bodies)
    assert sorted(b["accepted"] for b in bodies) == [0, total]
    async with runtime.db.sessionmaker() as session:
        stored = await session.scalar(
            select(func.count()).where(
                MeterReading.meter_id.in_([uuid.UUID(m["id"]) for m in meters])
            )
        )
    assert stored == total
    for m in meters:
        assert await _rollups(runtime, m["id"]) == await _expected(runtime, m["id"])
