"""Tariffs over HTTP: schedules and their history, bands in local time across DST, overrides
with expiry and audit, estimates, forecast, the operators' views and who may do what."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from gridex.audit.models import AuditLog
from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.factories import API, signed_in
from tests.meters.helpers import make_meter, reading
from tests.tariffs.helpers import create_tariff, current, zoned_region

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # Tokens outlive the clock's jumps across days.
    return {"access_token_minutes": 60 * 24 * 30}


@pytest.fixture(autouse=True)
def _clock(clock: FrozenClock) -> None:
    clock.set(NOW)


async def test_schedule_prices_bands_in_local_time_across_dst(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    member = await signed_in(client, runtime, Role.consumer)
    region = await zoned_region(runtime)
    created = await create_tariff(client, admin, region, effective_from="2026-03-03")
    # A date is local midnight: 2026-03-03 00:00 CET is 2026-03-02 23:00 UTC.
    assert created["effective_from"] == "2026-03-02T23:00:00Z"
    assert created["timezone"] == "Europe/Berlin"
    assert created["time_of_use"] == [
        {
            "name": "peak",
            "start": "17:00",
            "end": "21:00",
            "import_price": "0.420000",
            "days": ["mon", "tue", "wed", "thu", "fri"],
        },
        {
            "name": "off_peak",
            "start": "22:00",
            "end": "06:00",
            "import_price": "0.200000",
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        },
    ]

    # Before it takes effect the region has no tariff: the deployment's band prices.
    before = await current(client, member, region)
    assert (before["source"], before["import_price"], before["schedule_id"]) == (
        "default",
        "1.000000",
        None,
    )
    # Winter: 17:00 CET = 16:00 UTC.
    peak = await current(client, member, region, "2026-03-04T16:00:00Z")
    assert (peak["import_price"], peak["export_price"], peak["band"]) == (
        "0.420000",
        "0.080000",
        {"name": "peak", "start": "17:00", "end": "21:00"},
    )
    assert peak["schedule_id"] == created["id"]
    edge = await current(client, member, region, "2026-03-04T15:59:59Z")
    assert (edge["import_price"], edge["band"], edge["band_name"]) == ("0.300000", None, "standard")
    # Summer: 17:00 CEST = 15:00 UTC.
    summer = await current(client, member, region, "2026-06-03T15:00:00Z")
    assert summer["band"]["name"] == "peak"
    # Saturday evening: no weekday peak.
    saturday = await current(client, member, region, "2026-03-07T17:00:00Z")
    assert saturday["import_price"] == "0.300000"
    # Spring-forward night: 01:30 UTC is 03:30 CEST, still off-peak.
    spring = await current(client, member, region, "2026-03-29T01:30:00Z")
    assert spring["band"]["name"] == "off_peak"
    # A member's own region is the default.
    response = await client.get(f"{API}/tariffs/current", headers=member.headers)
    assert response.status_code == 200
    assert response.json()["region"] == "north"


async def test_a_new_schedule_supersedes_from_its_date_and_history_keeps_both(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    region = await zoned_region(runtime, "UTC")
    first = await create_tariff(client, admin, region, effective_from="2026-03-03T00:00:00Z")
    second = await create_tariff(
        client,
        admin,
        region,
        effective_from="2026-04-01",
        import_price="0.32",
        time_of_use=[],
    )
    assert (await current(client, admin, region, "2026-03-31T12:00:00Z"))["schedule_id"] == first[
        "id"
    ]
    after = await current(client, admin, region, "2026-04-01T00:00:00Z")
    assert (after["schedule_id"], after["import_price"], after["band"]) == (
        second["id"],
        "0.320000",
        None,
    )
    # The same instant twice is a conflict; the past cannot be rewritten.
    conflict = await create_tariff(client, admin, region, 409, effective_from="2026-04-01")
    assert conflict["error"]["code"] == "CONFLICT"
    past = await create_tariff(client, admin, region, 422, effective_from="2026-03-01")
    assert past["error"]["details"]["field"] == "effective_from"

    response = await client.get(
        f"{API}/tariffs/history", params={"region": region}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 2
    assert [
        (i["kind"], i["schedule"]["id"], i["schedule"]["superseded_at"]) for i in body["items"]
    ] == [
        ("schedule", second["id"], None),
        ("schedule", first["id"], "2026-04-01T00:00:00Z"),
    ]
    async with runtime.db.sessionmaker() as session:
        actions = list(
            await session.scalars(
                select(AuditLog.action).where(AuditLog.subject_id == region).order_by(AuditLog.at)
            )
        )
    assert actions == ["tariff.schedule_created", "tariff.schedule_created"]


async def test_override_wins_mid_day_until_it_expires_or_is_cancelled_and_is_audited(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    member = await signed_in(client, runtime, Role.consumer)
    region = await zoned_region(runtime)
    await create_tariff(client, admin, region, effective_from="2026-03-03")
    clock.set(datetime(2026, 3, 4, 11, 0, tzinfo=UTC))  # 12:00 CET
    body = {
        "region": region,
        "import_price": "0.55",
        "reason": "Grid emergency: transformer maintenance",
        "starts_at": "2026-03-04T12:00:00Z",
        "expires_at": "2026-03-04T17:00:00Z",
    }
    response = await client.post(f"{API}/tariffs/overrides", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    override = response.json()
    assert (override["import_price"], override["export_price"], override["active"]) == (
        "0.550000",
        None,
        False,
    )
    assert (await current(client, member, region, "2026-03-04T11:59:00Z"))[
        "import_price"
    ] == "0.300000"
    during = await current(client, member, region, "2026-03-04T16:30:00Z")  # 17:30 CET: peak
    assert (during["import_price"], during["export_price"], during["source"]) == (
        "0.550000",
        "0.080000",
        "override",
    )
    assert during["override_id"] == override["id"]
    assert during["band"]["name"] == "peak"  # the band under the override
    after = await current(client, member, region, "2026-03-04T17:00:00Z")
    assert (after["import_price"], after["source"]) == ("0.420000", "schedule")

    # Cancelled at 14:00 UTC: it applied 12:00-14:00 and no more, history keeps it.
    clock.set(datetime(2026, 3, 4, 14, 0, tzinfo=UTC))
    response = await client.delete(
        f"{API}/tariffs/overrides/{override['id']}", headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["ends_at"] == "2026-03-04T14:00:00Z"
    assert (await current(client, member, region, "2026-03-04T13:59:00Z"))["source"] == "override"
    assert (await current(client, member, region, "2026-03-04T14:00:00Z"))["source"] == "schedule"
    again = await client.delete(f"{API}/tariffs/overrides/{override['id']}", headers=admin.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "CONFLICT"

    history = await client.get(
        f"{API}/tariffs/history", params={"region": region}, headers=member.headers
    )
    kinds = [i["kind"] for i in history.json()["items"]]
    assert kinds == ["override", "schedule"]
    assert history.json()["items"][0]["override"]["cancelled_at"] == "2026-03-04T14:00:00Z"
    async with runtime.db.sessionmaker() as session:
        audit = list(
            await session.scalars(
                select(AuditLog)
                .where(AuditLog.action.like("tariff.override%"))
                .order_by(AuditLog.at)
            )
        )
    assert [(a.action, a.actor_id, a.details["override_id"]) for a in audit] == [
        ("tariff.override_created", admin.id, override["id"]),
        ("tariff.override_cancelled", admin.id, override["id"]),
    ]
    assert audit[0].details["reason"] == "Grid emergency: transformer maintenance"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {
                "time_of_use": [
                    {"start": "17:00", "end": "21:00", "import_price": "0.4"},
                    {"start": "20:00", "end": "23:00", "import_price": "0.5"},
                ]
            },
            "time_of_use",
        ),
        ({"time_of_use": [{"start": "7:00", "end": "21:00", "import_price": "0.4"}]}, None),
        ({"time_of_use": [{"start": "07:00", "end": "07:00", "import_price": "0.4"}]}, None),
        (
            {
                "time_of_use": [
                    {"start": "07:00", "end": "08:00", "import_price": "0.4", "days": ["monday"]}
                ]
            },
            None,
        ),
        ({"import_price": "0.1234567"}, None),
        ({"import_price": "-0.1"}, None),
        ({"import_price": "1001"}, None),
        ({"export_price": "0.35"}, "export_price"),
        ({"effective_from": "2026-03-05T00:00:00"}, None),  # naive
        ({"role": "admin"}, None),  # unknown field
    ],
)
async def test_invalid_schedules_are_refused_and_store_nothing(
    client: httpx.AsyncClient, runtime: Runtime, change: dict[str, object], field: str | None
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    region = await zoned_region(runtime)
    refused = await create_tariff(client, admin, region, 422, **change)
    assert refused["error"]["code"] == "VALIDATION_ERROR"
    if field is not None:
        assert refused["error"]["details"]["field"] == field
    response = await client.get(
        f"{API}/tariffs/history", params={"region": region}, headers=admin.headers
    )
    assert response.json()["total"] == 0


async def test_permissions(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    member = await signed_in(client, runtime, Role.prosumer)
    region = await zoned_region(runtime)
    for account in (member, operator):
        refused = await create_tariff(client, account, region, 403)
        assert refused["error"]["code"] == "FORBIDDEN"
        response = await client.post(
            f"{API}/tariffs/overrides",
            json={
                "region": region,
                "import_price": "1",
                "reason": "nope",
                "expires_at": "2026-03-05T00:00:00Z",
            },
            headers=account.headers,
        )
        assert response.status_code == 403
    for path in ("/tariffs/regions", "/tariffs/analytics"):
        response = await client.get(f"{API}{path}", headers=member.headers)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "FORBIDDEN"
        assert (await client.get(f"{API}{path}", headers=operator.headers)).status_code == 200
    unknown = await client.get(f"{API}/tariffs/current/nowhere", headers=member.headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NOT_FOUND"
    named = await client.get(
        f"{API}/tariffs/current", params={"region": "nowhere"}, headers=member.headers
    )
    assert named.status_code == 422
    assert named.json()["error"]["code"] == "UNKNOWN_REGION"
    missing = await client.delete(
        f"{API}/tariffs/overrides/00000000-0000-0000-0000-000000000000", headers=admin.headers
    )
    assert missing.status_code == 404
    anonymous = await client.get(f"{API}/tariffs/current/{region}")
    assert anonymous.status_code == 401


async def test_estimate_for_kwh_and_for_own_metered_usage_line_by_line(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    region = await zoned_region(runtime)
    member = await signed_in(client, runtime, Role.prosumer, region=region)
    await create_tariff(client, admin, region, effective_from="2026-03-03")
    response = await client.get(
        f"{API}/tariffs/estimate",
        params={"kwh": "2.5", "at": "2026-03-04T16:30:00Z"},
        headers=member.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["lines"] == [
        {
            "kind": "import",
            "band": "peak",
            "kwh": 2.5,
            "unit_price": "0.420000",
            "amount": "1.050000",
        }
    ]
    assert response.json()["total"] == "1.050000"
    bad = await client.get(
        f"{API}/tariffs/estimate", params={"kwh": "1.0001"}, headers=member.headers
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"] == "kwh"

    meter = await make_meter(client, member, kind="bidirectional", region=region, capacity_kw=50)
    clock.set(datetime(2026, 3, 5, 0, 0, tzinfo=UTC))
    # Quarter-hours (UTC ends) on Wednesday 2026-03-04 in Berlin (CET = UTC+1):
    # 15:45-16:00 UTC = 16:45 local, standard; 16:00-16:15 = 17:00 local, peak;
    # 16:15-16:30 peak; 21:00-21:15 = 22:00 local, off-peak.
    readings = [
        reading(datetime(2026, 3, 4, 16, 0, tzinfo=UTC), 1.0, 0.0),
        reading(datetime(2026, 3, 4, 16, 15, tzinfo=UTC), 2.0, 0.5),
        reading(datetime(2026, 3, 4, 16, 30, tzinfo=UTC), 1.5, 0.0),
        reading(datetime(2026, 3, 4, 21, 15, tzinfo=UTC), 0.999, 1.25),
    ]
    response = await client.post(
        f"{API}/meters/{meter['id']}/readings", json={"readings": readings}, headers=member.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 4, response.text
    response = await client.get(
        f"{API}/tariffs/estimate",
        params={"from": "2026-03-04T00:00:00Z", "to": "2026-03-05T00:00:00Z"},
        headers=member.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lines"] == [
        {
            "kind": "import",
            "band": "peak",
            "kwh": 3.5,
            "unit_price": "0.420000",
            "amount": "1.470000",
        },
        {
            "kind": "import",
            "band": "standard",
            "kwh": 1.0,
            "unit_price": "0.300000",
            "amount": "0.300000",
        },
        {
            "kind": "import",
            "band": "off_peak",
            "kwh": 0.999,
            "unit_price": "0.200000",
            "amount": "0.199800",
        },
        {
            "kind": "export",
            "band": "feed_in",
            "kwh": 1.75,
            "unit_price": "0.080000",
            "amount": "-0.140000",
        },
    ]
    assert body["total"] == "1.829800"
    assert (body["region"], body["from"], body["to"]) == (
        region,
        "2026-03-04T00:00:00Z",
        "2026-03-05T00:00:00Z",
    )
    # Another member's meters are not in their estimate.
    other = await signed_in(client, runtime, Role.consumer, region=region)
    response = await client.get(
        f"{API}/tariffs/estimate",
        params={"from": "2026-03-04T00:00:00Z", "to": "2026-03-05T00:00:00Z"},
        headers=other.headers,
    )
    assert response.json() == {**response.json(), "lines": [], "total": "0.000000"}


async def test_forecast_regions_overview_and_analytics(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    region = await zoned_region(runtime)
    member = await signed_in(client, runtime, Role.consumer, region=region)
    schedule = await create_tariff(client, admin, region, effective_from="2026-03-03")
    clock.set(datetime(2026, 3, 4, 15, 7, tzinfo=UTC))
    response = await client.get(f"{API}/tariffs/forecast", headers=member.headers)
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    assert len(points) == 96  # 24 h of 15-minute epochs, from the one in delivery
    assert points[0]["epoch"] == "2026-03-04T15:00:00Z"
    by_epoch = {p["epoch"]: p for p in points}
    assert by_epoch["2026-03-04T15:45:00Z"]["import_price"] == "0.300000"
    assert by_epoch["2026-03-04T16:00:00Z"]["band"] == "peak"
    assert by_epoch["2026-03-04T21:00:00Z"]["import_price"] == "0.200000"
    assert all(p["expected_clearing_price"] is None for p in points)

    response = await client.get(f"{API}/tariffs/regions", headers=operator.headers)
    assert response.status_code == 200
    row = next(r for r in response.json() if r["region"] == region)
    assert (row["source"], row["schedule_id"], row["import_price"], row["pending_overrides"]) == (
        "schedule",
        schedule["id"],
        "0.300000",
        0,
    )

    response = await client.get(
        f"{API}/tariffs/analytics",
        params={"region": region, "from": "2026-03-04T00:00:00Z", "to": "2026-03-05T00:00:00Z"},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # Berlin day 2026-03-04 00:00-24:00 local is 23:00 UTC the day before; this UTC day is
    # 01:00 local .. 01:00 next day: off-peak 01-06 and 22-24 and 00-01 = 8 h, peak 4, rest 12.
    assert {b["band"]: b["hours"] for b in body["bands"]} == {
        "off_peak": 8.0,
        "peak": 4.0,
        "standard": 12.0,
    }
    # (8 x 0.20 + 4 x 0.42 + 12 x 0.30) / 24 = 0.286667
    assert body["time_weighted_import_price"] == "0.286667"
    assert body["market"]["epochs_cleared"] == 0


async def test_an_override_cancelled_before_it_starts_never_applies(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    operator = await signed_in(client, runtime, Role.operator)
    region = await zoned_region(runtime)
    await create_tariff(client, admin, region, effective_from="2026-03-03")
    body = {
        "region": region,
        "export_price": "0.01",
        "reason": "Planned export curtailment",
        "starts_at": "2026-03-05T10:00:00Z",
        "expires_at": "2026-03-05T12:00:00Z",
    }
    response = await client.post(f"{API}/tariffs/overrides", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    override = response.json()

    async def pending() -> int:
        response = await client.get(f"{API}/tariffs/regions", headers=operator.headers)
        return int(next(r for r in response.json() if r["region"] == region)["pending_overrides"])

    assert await pending() == 1
    assert (await current(client, admin, region, "2026-03-05T11:00:00Z"))["export_price"] == (
        "0.010000"
    )
    response = await client.delete(
        f"{API}/tariffs/overrides/{override['id']}", headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert await pending() == 0
    during = await current(client, admin, region, "2026-03-05T11:00:00Z")
    assert (during["export_price"], during["source"]) == ("0.080000", "schedule")
