from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest
import xmlschema

from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from tests.factories import API, signed_in
from tests.meters.helpers import NOW, Device, make_meter, reading

XSD = Path(__file__).parent / "data" / "espi.xsd"  # NAESB REQ.21 ESPI 4.0 (Apache-2.0)
ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "http://naesb.org/espi"


@pytest.fixture(scope="module")
def espi_schema() -> xmlschema.XMLSchema:
    # The Atom wrapper is not in the ESPI schema (its import warning is expected); never fetch.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xmlschema.XMLSchemaImportWarning)
        return xmlschema.XMLSchema(str(XSD), allow="local")


async def test_export_is_valid_espi_and_round_trips(
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    espi_schema: xmlschema.XMLSchema,
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    source = await make_meter(client, owner)
    target = await make_meter(client, owner)
    start = NOW - timedelta(days=2)
    items = [
        reading(start + timedelta(minutes=15 * i), (i % 7) / 8, (i % 3) / 4)
        for i in range(1, 2 * 96 + 1)
    ]
    items += [
        reading(NOW - timedelta(days=3, minutes=5 * i), 0.1, 0, interval_minutes=5)
        for i in range(3)
    ]
    await client.post(
        f"{API}/meters/{source['id']}/readings", json={"readings": items}, headers=owner.headers
    )
    window = {"from": utc_iso(NOW - timedelta(days=4)), "to": utc_iso(NOW)}
    export = await client.get(
        f"{API}/meters/{source['id']}/export/green-button", params=window, headers=owner.headers
    )
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/atom+xml")

    feed = ET.fromstring(export.content)
    assert feed.tag == f"{ATOM}feed"
    contents = [c for entry in feed.iter(f"{ATOM}entry") for c in entry.find(f"{ATOM}content")]
    kinds = [c.tag.split("}")[1] for c in contents]
    assert kinds.count("UsagePoint") == 1
    assert kinds.count("MeterReading") == 2
    assert kinds.count("ReadingType") == 2
    assert kinds.count("IntervalBlock") >= 2
    # Every ESPI element of the export is valid against the official schema.
    for element in contents:
        assert element.tag.startswith(f"{{{ESPI}}}")
        espi_schema.validate(ET.tostring(element))
    flows = sorted(
        int(c.find(f"{{{ESPI}}}flowDirection").text)  # type: ignore[union-attr,arg-type]
        for c in contents
        if c.tag.endswith("ReadingType")
    )
    assert flows == [1, 19]
    rt = next(c for c in contents if c.tag.endswith("ReadingType"))
    values = {child.tag.split("}")[1]: child.text for child in rt}
    assert values["uom"] == "72"
    assert values["kind"] == "12"
    assert values["accumulationBehaviour"] == "4"
    assert values["intervalLength"] == "900"

    imported = await client.post(
        f"{API}/meters/{target['id']}/import/green-button",
        content=export.content,
        headers={**owner.headers, "Content-Type": "application/atom+xml"},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["accepted"] == len(items)
    # Identical rollups at every granularity.
    for interval in ("15m", "1h", "1d", "1mo"):
        series = []
        for meter in (source, target):
            response = await client.get(
                f"{API}/meters/{meter['id']}/readings",
                params={**window, "interval": interval},
                headers=owner.headers,
            )
            series.append(response.json()["points"])
        assert series[0] == series[1], interval
    # Importing again changes nothing.
    again = await client.post(
        f"{API}/meters/{target['id']}/import/green-button",
        content=export.content,
        headers=owner.headers,
    )
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, len(items))


async def test_import_refuses_unsafe_or_foreign_xml(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner)
    url = f"{API}/meters/{meter['id']}/import/green-button"
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;">]><feed xmlns="http://www.w3.org/2005/Atom">&lol2;</feed>'
    )
    for body in (bomb, b"<not-xml", b'<feed xmlns="urn:x"/>'):
        response = await client.post(url, content=body, headers=owner.headers)
        assert response.status_code == 422, body
    # A signed meter refuses imported data: it carries no device signature.
    signed = await make_meter(client, owner, device_public_key=Device().public_key)
    plain = await make_meter(client, owner)
    await client.post(
        f"{API}/meters/{plain['id']}/readings", json=reading(NOW), headers=owner.headers
    )
    export = await client.get(
        f"{API}/meters/{plain['id']}/export/green-button", headers=owner.headers
    )
    refused = await client.post(
        f"{API}/meters/{signed['id']}/import/green-button",
        content=export.content,
        headers=owner.headers,
    )
    assert refused.json()["rejected"][0]["code"] == "INVALID_SIGNATURE"


def utility_feed(intervals: list[tuple[int, int, int]], multiplier: int) -> bytes:
    """A utility's feed: one ReadingType (import, Wh x 10^multiplier) and one IntervalBlock of
    (start, duration, value) IntervalReadings, without links (a single ReadingType needs none)."""
    readings = "".join(
        f"<IntervalReading><timePeriod><duration>{d}</duration><start>{s}</start></timePeriod>"
        f"<value>{v}</value></IntervalReading>"
        for s, d, v in intervals
    )
    return (
        f'<feed xmlns="http://www.w3.org/2005/Atom"><entry><content>'
        f'<ReadingType xmlns="{ESPI}"><flowDirection>1</flowDirection>'
        f"<powerOfTenMultiplier>{multiplier}</powerOfTenMultiplier><uom>72</uom></ReadingType>"
        f'</content></entry><entry><content><IntervalBlock xmlns="{ESPI}">{readings}'
        f"</IntervalBlock></content></entry></feed>"
    ).encode()


async def test_import_spreads_hourly_intervals_and_rounds_each_value(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner)  # 15-minute intervals
    hour = int((NOW - timedelta(hours=3)).timestamp())
    feed = utility_feed(
        [
            (hour, 3600, 10_002),  # 1000.2 Wh in tenths: 1000 Wh, four quarters of 250
            (hour + 3600, 3600, 4_015),  # 401.5 Wh: 402 Wh (half to even), 101 + 101 + 100 + 100
            (hour + 7200, 600, 1_000),  # ten minutes: not a 15-minute reading, refused alone
        ],
        multiplier=-1,
    )
    url = f"{API}/meters/{meter['id']}"
    response = await client.post(f"{url}/import/green-button", content=feed, headers=owner.headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 8
    [refused] = result["rejected"]
    assert refused["index"] == 8

    points = await client.get(
        f"{url}/readings",
        params={"interval": "raw", "from": utc_iso(NOW - timedelta(hours=4))},
        headers=owner.headers,
    )
    consumed = [p["consumed_kwh"] for p in points.json()["points"]]
    assert consumed == [0.25] * 4 + [0.101, 0.101, 0.1, 0.1]
    hours = await client.get(
        f"{url}/readings",
        params={"interval": "1h", "from": utc_iso(NOW - timedelta(hours=4))},
        headers=owner.headers,
    )
    assert [p["consumed_kwh"] for p in hours.json()["points"]] == [1.0, 0.402]
