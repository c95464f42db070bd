"""Energy analytics and the consumption report, checked against figures computed here from the
readings the test sends."""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from tests.factories import API, new_region, signed_in
from tests.meters.helpers import NOW, make_meter, reading


def _readings(seed: int, ends: list[datetime], solar: bool) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for end in ends:
        produced = rng.randint(0, 900) / 1000 if solar and 6 <= end.hour < 18 else 0.0
        out.append(reading(end, rng.randint(0, 700) / 1000, produced))
    return out


async def test_energy_figures_follow_the_readings(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    region = await new_region(runtime)
    admin = await signed_in(client, runtime, Role.admin)
    prosumer = await signed_in(client, runtime, Role.prosumer, region=region)
    other = await signed_in(client, runtime, Role.prosumer, region=region)
    roof = await make_meter(client, prosumer, region=region)
    house = await make_meter(client, prosumer, region=region, kind="consumption")
    neighbour = await make_meter(client, other, region=region)

    first = NOW - timedelta(days=2) + timedelta(minutes=15)
    ends = [first + timedelta(minutes=15 * i) for i in range(2 * 96)]
    sent: dict[str, list[dict[str, object]]] = {
        roof["id"]: _readings(1, ends, solar=True),
        house["id"]: _readings(2, ends, solar=False),
        neighbour["id"]: _readings(3, ends, solar=True),
    }
    owners = {roof["id"]: prosumer, house["id"]: prosumer, neighbour["id"]: other}
    for meter_id, readings in sent.items():
        response = await client.post(
            f"{API}/meters/{meter_id}/readings",
            json={"readings": readings},
            headers=owners[meter_id].headers,
        )
        assert response.json()["accepted"] == len(readings), response.text

    def expected(meter_ids: list[str]) -> dict[datetime, tuple[int, int]]:
        """Per hour (of the interval's start), summed Wh over the meters."""
        hours: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
        for meter_id in meter_ids:
            for r in sent[meter_id]:
                start = datetime.fromisoformat(str(r["timestamp"])) - timedelta(minutes=15)
                hour = start.replace(minute=0)
                hours[hour][0] += round(Decimal(str(r["energy_consumed_kwh"])) * 1000)
                hours[hour][1] += round(Decimal(str(r["energy_produced_kwh"])) * 1000)
        return {h: (c, p) for h, (c, p) in hours.items()}

    mine = expected([roof["id"], house["id"]])
    consumed = sum(c for c, _ in mine.values())
    produced = sum(p for _, p in mine.values())
    self_wh = sum(min(c, p) for c, p in mine.values())

    # A region emission factor set at runtime is the one the prosumer's figures use.
    config = await client.put(
        f"{API}/admin/config",
        json={"region_emission_factors": {region: "0.25"}},
        headers=admin.headers,
    )
    assert config.status_code == 200, config.text

    params = {"from": utc_iso(NOW - timedelta(days=2)), "to": utc_iso(NOW), "group": "day"}
    response = await client.get(f"{API}/analytics/energy", params=params, headers=prosumer.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["from"] == utc_iso(NOW - timedelta(days=2))
    assert body["meters"] == 2
    assert body["consumed_kwh"] == pytest.approx(consumed / 1000)
    assert body["produced_kwh"] == pytest.approx(produced / 1000)
    assert body["self_consumed_kwh"] == pytest.approx(self_wh / 1000)
    assert body["imported_kwh"] == pytest.approx((consumed - self_wh) / 1000)
    assert body["exported_kwh"] == pytest.approx((produced - self_wh) / 1000)
    assert body["bought_local_kwh"] == 0
    env = body["environment"]
    assert env["emission_factor_kg_per_kwh"] == "0.25"
    assert env["grid_emissions_kg"] == pytest.approx(
        float(Decimal(consumed - self_wh) / 1000 * Decimal("0.25")), abs=1e-3
    )
    assert env["avoided_emissions_kg"] == pytest.approx(
        float(Decimal(self_wh) / 1000 * Decimal("0.25")), abs=1e-3
    )
    days: dict[datetime, list[int]] = defaultdict(lambda: [0, 0, 0])
    for hour, (c, p) in mine.items():
        day = days[hour.replace(hour=0)]
        day[0] += c
        day[1] += p
        day[2] += min(c, p)
    assert [g["start"] for g in body["groups"]] == [utc_iso(d) for d in sorted(days)]
    for group in body["groups"]:
        c, p, s = days[datetime.fromisoformat(group["start"])]
        assert group["consumed_kwh"] == pytest.approx(c / 1000)
        assert group["produced_kwh"] == pytest.approx(p / 1000)
        assert group["self_consumed_kwh"] == pytest.approx(s / 1000)

    # The operator's view of the region: both users' meters, met locally per hour.
    region_hours = expected(list(sent))
    operator = await signed_in(client, runtime, Role.operator, region=region)
    overview = await client.get(
        f"{API}/dashboard/stats",
        params={"from": params["from"], "to": params["to"]},
        headers=operator.headers,
    )
    assert overview.status_code == 200, overview.text
    view = overview.json()
    total_c = sum(c for c, _ in region_hours.values())
    met = sum(min(c, p) for c, p in region_hours.values())
    peak_hour = max(sorted(region_hours), key=lambda h: region_hours[h][0])
    assert view["region"] == region
    assert view["meters"] == 3
    assert view["consumed_kwh"] == pytest.approx(total_c / 1000)
    assert view["met_locally_kwh"] == pytest.approx(met / 1000)
    assert view["local_share_percent"] == pytest.approx(round(met * 100 / total_c, 1))
    assert view["peak_load_kw"] == pytest.approx(region_hours[peak_hour][0] / 1000)
    assert view["peak_at"] == utc_iso(peak_hour)
    by_meter = {
        m: sum(round(Decimal(str(r["energy_consumed_kwh"])) * 1000) for r in sent[m]) for m in sent
    }
    assert [t["meter_id"] for t in view["top_consumers"]] == sorted(
        by_meter, key=lambda m: -by_meter[m]
    )

    # The CSV report has the same rows and sums to the same totals.
    report = await client.get(
        f"{API}/reports/consumption",
        params={**params, "format": "csv"},
        headers=prosumer.headers,
    )
    assert report.status_code == 200, report.text
    assert report.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(report.text)))
    assert len(rows) == len(days)
    assert sum(Decimal(r["consumed_kwh"]) for r in rows) * 1000 == consumed
    assert sum(Decimal(r["self_consumed_kwh"]) for r in rows) * 1000 == self_wh
    as_json = await client.get(
        f"{API}/reports/consumption", params=params, headers=prosumer.headers
    )
    assert [r["consumed_kwh"] for r in as_json.json()["rows"]] == [
        float(r["consumed_kwh"]) for r in rows
    ]


async def test_roles_see_only_what_is_theirs(client: httpx.AsyncClient, runtime: Runtime) -> None:
    prosumer = await signed_in(client, runtime, Role.prosumer)
    operator = await signed_in(client, runtime, Role.operator)
    admin = await signed_in(client, runtime, Role.admin)
    for path, params in (
        ("/analytics/energy", {"region": "north"}),
        ("/analytics/trading", {"region": "north"}),
        ("/reports/revenue", {"region": "north"}),
        ("/dashboard/stats", {}),
        ("/analytics/users", {}),
        ("/analytics/financial", {}),
        ("/admin/config", {}),
        ("/admin/stats", {}),
    ):
        response = await client.get(f"{API}{path}", params=params, headers=prosumer.headers)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "FORBIDDEN"
    for path in ("/analytics/users", "/analytics/financial", "/admin/config"):
        assert (await client.get(f"{API}{path}", headers=operator.headers)).status_code == 403
        assert (await client.get(f"{API}{path}", headers=admin.headers)).status_code == 200
    assert (await client.get(f"{API}/analytics/energy")).status_code == 401
    unknown = await client.get(
        f"{API}/dashboard/stats", params={"region": "nowhere"}, headers=operator.headers
    )
    assert unknown.status_code == 422
    backwards = await client.get(
        f"{API}/analytics/energy",
        params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=prosumer.headers,
    )
    assert backwards.status_code == 422
    naive = await client.get(
        f"{API}/analytics/energy", params={"from": "2026-01-01T00:00:00"}, headers=prosumer.headers
    )
    assert naive.status_code == 422
    # Nothing of anyone's yet: zeros, not errors.
    empty = (await client.get(f"{API}/analytics/energy", headers=prosumer.headers)).json()
    assert (empty["meters"], empty["consumed_kwh"], empty["self_sufficiency_percent"]) == (
        0,
        0,
        None,
    )
