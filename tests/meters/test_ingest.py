from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.meters.models import MeterReading
from tests.factories import API, signed_in
from tests.meters.helpers import Device, at_now, make_key, make_meter, quarters, reading


async def _post(
    client: httpx.AsyncClient, meter: dict[str, Any], body: Any, headers: dict[str, str]
) -> dict[str, Any]:
    response = await client.post(f"{API}/meters/{meter['id']}/readings", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_single_list_idempotent_and_conflict(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner)

    one = await _post(client, meter, reading(now, 0.25, 0.125, voltage=230.1), owner.headers)
    assert one == {"accepted": 1, "duplicates": 0, "rejected": []}
    # The same reading again is a duplicate, not an error.
    again = await _post(client, meter, reading(now, 0.25, 0.125, voltage=230.1), owner.headers)
    assert again == {"accepted": 0, "duplicates": 1, "rejected": []}
    # Other values for the same interval conflict, and are kept in the dead-letter table.
    conflict = await _post(client, meter, reading(now, 0.3, 0.125), owner.headers)
    assert conflict["accepted"] == 0
    assert conflict["rejected"] == [
        {
            "index": 0,
            "code": "READING_CONFLICT",
            "reason": "conflict",
            "message": "A reading with other values is stored for this interval",
        }
    ]

    ends = quarters(now - timedelta(hours=2), 4)
    listed = await _post(
        client,
        meter,
        {"readings": [reading(t, 0.1) for t in ends] + [reading(ends[0], 0.1)]},
        owner.headers,
    )
    assert (listed["accepted"], listed["duplicates"], listed["rejected"]) == (4, 1, [])

    latest = await client.get(f"{API}/meters/{meter['id']}/latest", headers=owner.headers)
    assert latest.status_code == 200
    assert latest.json()["timestamp"] == utc_iso(now)
    assert latest.json()["energy_consumed_kwh"] == 0.25
    assert latest.json()["voltage"] == 230.1


async def test_every_validation_has_its_code_and_dead_letter(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    owner = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    meter = await make_meter(client, owner, capacity_kw=4)  # 4 kW x 15 min = 1 kWh at most
    bad: list[tuple[Any, str]] = [
        ("not an object", "malformed"),
        ({"timestamp": utc_iso(now)}, "malformed"),
        (reading(now, 0.0001), "malformed"),  # more than 3 decimals
        (reading(now, "1"), "malformed"),  # strings are not numbers
        (reading(now, 0.1, extra_field=1), "malformed"),
        ({**reading(now), "timestamp": "2026-03-04T12:00:00"}, "naive_timestamp"),
        ({**reading(now), "timestamp": "yesterday"}, "malformed"),
        ({**reading(now), "timestamp": "0001-01-01T00:00:00+01:00"}, "malformed"),  # before UTC 1
        (reading(now + timedelta(minutes=15)), "future_timestamp"),
        (reading(now - timedelta(days=400)), "too_old"),
        (reading(now, -0.1), "negative"),
        (reading(now, 0, -0.1), "negative"),
        (reading(now, 1.001), "over_capacity"),
        (reading(now, 0, 1.5), "over_capacity"),
        (reading(now + timedelta(minutes=7)), "misaligned"),
        (reading(now, interval_minutes=7), "malformed"),
        (reading(now, power_factor=2), "out_of_range"),
    ]
    body = {"readings": [item for item, _ in bad] + [reading(now, 1.0)]}
    result = await _post(client, meter, body, owner.headers)
    assert result["accepted"] == 1  # exactly the capacity is allowed
    reasons = [(r["index"], r["reason"]) for r in result["rejected"]]
    assert reasons == [(i, reason) for i, (_, reason) in enumerate(bad)]
    assert {r["code"] for r in result["rejected"]} == {"VALIDATION_ERROR"}

    # A small clock skew is tolerated.
    skewed = await _post(
        client, meter, reading(now + timedelta(minutes=3), 0.05, interval_minutes=1), owner.headers
    )
    assert skewed["accepted"] == 1

    dead = await client.get(
        f"{API}/readings/rejected",
        params={"meter_id": meter["id"], "per_page": 100},
        headers=operator.headers,
    )
    assert dead.status_code == 200
    assert dead.json()["total"] == len(bad)
    by_reason = await client.get(
        f"{API}/readings/rejected", params={"reason": "too_old"}, headers=operator.headers
    )
    item = by_reason.json()["items"][0]
    assert item["payload"]["timestamp"] == utc_iso(now - timedelta(days=400))
    assert item["source"] == "http"
    assert item["meter_serial"] == meter["serial"]
    assert (await client.get(f"{API}/readings/rejected", headers=owner.headers)).status_code == 403

    # An inactive meter refuses readings; maintenance still accepts them.
    await client.put(
        f"{API}/meters/{meter['id']}/status", json={"status": "inactive"}, headers=operator.headers
    )
    inactive = await _post(client, meter, reading(now - timedelta(hours=1)), owner.headers)
    assert inactive["rejected"][0]["reason"] == "meter_inactive"
    await client.put(
        f"{API}/meters/{meter['id']}/status",
        json={"status": "maintenance"},
        headers=operator.headers,
    )
    maintenance = await _post(client, meter, reading(now - timedelta(hours=1)), owner.headers)
    assert maintenance["accepted"] == 1

    # The body as a whole: not JSON, not an object.
    for raw in (b"{", b"[1, 2]"):
        response = await client.post(
            f"{API}/meters/{meter['id']}/readings",
            content=raw,
            headers={**owner.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422


async def test_who_may_send_readings(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    owner = await signed_in(client, runtime)
    stranger = await signed_in(client, runtime)
    meter = await make_meter(client, owner)
    other = await make_meter(client, owner)
    bound = await make_key(client, owner, ["readings:write"], meter["id"])
    bound_other = await make_key(client, owner, ["readings:write"], other["id"])
    read_only = await make_key(client, owner, ["meters:read"], meter["id"])
    url = f"{API}/meters/{meter['id']}/readings"

    ok = await client.post(url, json=reading(now), headers=bound)
    assert ok.status_code == 200
    assert ok.json()["accepted"] == 1
    assert (await client.post(url, json=reading(now), headers=bound_other)).status_code == 404
    assert (await client.post(url, json=reading(now), headers=read_only)).status_code == 403
    assert (await client.post(url, json=reading(now), headers=stranger.headers)).status_code == 404
    assert (await client.post(url, json=reading(now))).status_code == 401


async def test_batch_across_meters(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    head_end = await signed_in(client, runtime, Role.operator)
    owner = await signed_in(client, runtime)
    stranger = await signed_in(client, runtime)
    meters = [await make_meter(client, owner) for _ in range(3)]
    foreign = await make_meter(client, stranger)
    key = await make_key(client, head_end, ["readings:write"])
    ends = quarters(now - timedelta(hours=5), 20)
    items = [{"meter_serial": m["serial"], **reading(t, 0.2, 0.1)} for m in meters for t in ends]
    items.append({"meter_serial": "SM_UNKNOWN", **reading(now)})
    items.append(reading(now))  # no meter_serial
    items.append({"meter_serial": meters[0]["serial"], **reading(ends[0], 0.2, 0.1)})  # duplicate
    response = await client.post(f"{API}/readings/batch", json={"readings": items}, headers=key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (60, 1)
    assert [(r["index"], r["code"], r["reason"]) for r in body["rejected"]] == [
        (60, "NOT_FOUND", "unknown_meter"),
        (61, "VALIDATION_ERROR", "malformed"),
    ]
    # The same batch again: all duplicates, nothing new.
    again = await client.post(f"{API}/readings/batch", json={"readings": items}, headers=key)
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 61)

    # A prosumer's key writes only the prosumer's meters.
    own_key = await make_key(client, owner, ["readings:write"])
    mixed = await client.post(
        f"{API}/readings/batch",
        json={
            "readings": [
                {"meter_serial": meters[0]["serial"], **reading(now)},
                {"meter_serial": foreign["serial"], **reading(now)},
            ]
        },
        headers=own_key,
    )
    assert mixed.json()["accepted"] == 1
    assert mixed.json()["rejected"][0]["code"] == "NOT_FOUND"
    # Scope and credential checks.
    no_scope = await make_key(client, head_end, ["meters:read"])
    assert (
        await client.post(f"{API}/readings/batch", json={"readings": []}, headers=no_scope)
    ).status_code == 403
    assert (
        await client.post(f"{API}/readings/batch", json={"readings": []}, headers=head_end.headers)
    ).status_code == 403
    assert (
        await client.post(f"{API}/readings/batch", json={"items": []}, headers=key)
    ).status_code == 422


async def test_batch_limit(client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock) -> None:
    now = at_now(clock)
    operator = await signed_in(client, runtime, Role.operator)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner, interval_minutes=1)
    key = await make_key(client, operator, ["readings:write"])
    ends = [now - timedelta(minutes=i) for i in range(10_001)]
    items = [
        {"meter_serial": meter["serial"], **reading(t, 0.01, interval_minutes=1)} for t in ends
    ]
    too_many = await client.post(f"{API}/readings/batch", json={"readings": items}, headers=key)
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    full = await client.post(
        f"{API}/readings/batch", json={"readings": items[:10_000]}, headers=key
    )
    assert full.status_code == 200
    assert full.json()["accepted"] == 10_000
    stats = await client.get(
        f"{API}/meters/{meter['id']}/stats",
        params={"from": utc_iso(now - timedelta(days=7)), "to": utc_iso(now)},
        headers=owner.headers,
    )
    assert stats.json()["readings"] == 10_000
    assert stats.json()["total_consumed_kwh"] == 100.0


async def test_signed_meter(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    owner = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    device = Device()
    meter = await make_meter(client, owner, device_public_key=device.public_key)
    ends = quarters(now - timedelta(hours=1), 4)
    signed = device.sign(reading(ends[0], 0.5, 0.25, voltage=229.5, metadata={"fw": "1.2"}))
    tampered = {**device.sign(reading(ends[1], 0.5)), "energy_consumed_kwh": 0.6}
    other_device = Device().sign(reading(ends[2], 0.5))
    unsigned = reading(ends[3], 0.5)
    result = await _post(
        client, meter, {"readings": [signed, tampered, other_device, unsigned]}, owner.headers
    )
    assert result["accepted"] == 1
    assert [(r["code"], r["reason"]) for r in result["rejected"]] == [
        ("INVALID_SIGNATURE", "invalid_signature"),
        ("INVALID_SIGNATURE", "invalid_signature"),
        ("INVALID_SIGNATURE", "missing_signature"),
    ]
    # Signed readings through the batch path include meter_serial in what is signed.
    key = await make_key(client, operator, ["readings:write"])
    batch_item = device.sign({"meter_serial": meter["serial"], **reading(ends[3], 0.5)})
    batch = await client.post(f"{API}/readings/batch", json={"readings": [batch_item]}, headers=key)
    assert batch.json()["accepted"] == 1


def _end(start: datetime, minutes: int) -> datetime:
    return start + timedelta(minutes=minutes)


async def test_batch_stores_each_readings_own_optional_values(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    """Values shared by the whole batch and values that differ are stored alike, per reading,
    on both backends (metadata included)."""
    now = at_now(clock)
    head_end = await signed_in(client, runtime, Role.operator)
    key = await make_key(client, head_end, ["readings:write"])
    a, b = (await make_meter(client, head_end), await make_meter(client, head_end))
    earlier = now - timedelta(minutes=15)
    sent: list[dict[str, Any]] = [
        {"meter_serial": a["serial"], **reading(earlier, 0.2, voltage=230.0, power_factor=-0.0)},
        {"meter_serial": a["serial"], **reading(now, 0.1, interval_minutes=5, peak_demand_kw=1.5)},
        {"meter_serial": b["serial"], **reading(now, 0.3, voltage=231.5, frequency=50)},
    ]
    for item in sent:  # the same in every reading of the batch
        item.update(current=4.0, metadata={"fw": "1.2"})
    response = await client.post(f"{API}/readings/batch", json={"readings": sent}, headers=key)
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}

    async with runtime.db.sessionmaker() as session:
        rows = {
            (str(r.meter_id), r.timestamp): r
            for r in await session.scalars(
                select(MeterReading).where(
                    MeterReading.meter_id.in_([uuid.UUID(a["id"]), uuid.UUID(b["id"])])
                )
            )
        }
    stored = [
        (
            r.interval_minutes,
            r.consumed_wh,
            r.peak_demand_w,
            r.power_factor,
            r.voltage,
            r.current,
            r.frequency,
            r.reading_metadata,
        )
        for r in (rows[(a["id"], earlier)], rows[(a["id"], now)], rows[(b["id"], now)])
    ]
    assert stored == [
        (15, 200, None, -0.0, 230.0, 4.0, None, {"fw": "1.2"}),
        (5, 100, 1500, None, None, 4.0, None, {"fw": "1.2"}),
        (15, 300, None, None, 231.5, 4.0, 50.0, {"fw": "1.2"}),
    ]
    if not runtime.db.is_sqlite:  # SQLite keeps a whole REAL as an integer: -0.0 reads back 0.0
        signed_zero = rows[(a["id"], earlier)].power_factor
        assert signed_zero is not None
        assert math.copysign(1.0, signed_zero) == -1.0  # stored as sent, sign and all
