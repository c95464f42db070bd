"""Green Button (NAESB ESPI) Atom feeds of interval data: export and import.

Export: one UsagePoint, and per direction (import from the grid = flowDirection 1, export to
the grid = flowDirection 19) a MeterReading, its ReadingType (Wh: uom 72, kind 12 energy,
accumulationBehaviour 4 delta data, intervalLength 900) and one IntervalBlock per UTC day whose
IntervalReadings carry start, duration and value in Wh. Import reads such a feed with defusedxml
and sends its intervals through the ordinary ingest path.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element, SubElement, register_namespace, tostring

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.errors import ValidationFailed
from gridex.core.runtime import Runtime
from gridex.core.units import round_half_even, wh_to_kwh
from gridex.meters import repository as repo
from gridex.meters.ingest import ingest
from gridex.meters.models import Meter, MeterReading
from gridex.meters.schemas import IngestOut
from gridex.meters.service import ingest_out
from gridex.meters.validation import Item, MeterRef

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
FLOW_IMPORT = 1  # forward: delivered to the customer (our consumed)
FLOW_EXPORT = 19  # reverse: received from the customer (our produced)
UOM_WH = 72
_NS_UUID = uuid.UUID("6f0b8f5e-4d0a-4c8e-9a53-0d3c1b7a9e21")
MAX_EXPORT = timedelta(days=366)
register_namespace("atom", ATOM)
register_namespace("espi", ESPI)
_NS = {"a": ATOM, "e": ESPI}


def _atom(parent: Element, tag: str, text: str | None = None, **attrs: str) -> Element:
    el = SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def _espi(parent: Element, tag: str, text: str | int | None = None) -> Element:
    el = SubElement(parent, f"{{{ESPI}}}{tag}")
    if text is not None:
        el.text = str(text)
    return el


def _entry(feed: Element, key: str, title: str, links: list[tuple[str, str]], now: str) -> Element:
    entry = _atom(feed, "entry")
    _atom(entry, "id", f"urn:uuid:{uuid.uuid5(_NS_UUID, key)}")
    for rel, href in links:
        _atom(entry, "link", rel=rel, href=href)
    _atom(entry, "title", title)
    _atom(entry, "published", now)
    _atom(entry, "updated", now)
    return _atom(entry, "content")


def _interval_blocks(
    feed: Element,
    meter: Meter,
    title: str,
    href: str,
    flow: int,
    column: str,
    readings: list[MeterReading],
    stamp: str,
) -> None:
    """One IntervalBlock per UTC day of ``readings``, values from ``column`` (Wh)."""
    by_day: dict[datetime, list[MeterReading]] = defaultdict(list)
    for r in readings:
        begin = r.timestamp - timedelta(minutes=r.interval_minutes)
        by_day[begin.replace(hour=0, minute=0, second=0, microsecond=0)].append(r)
    for n, (day, rows) in enumerate(sorted(by_day.items()), start=1):
        content = _entry(
            feed,
            f"{meter.id}:block:{flow}:{day.isoformat()}",
            f"{title} {day.date().isoformat()}",
            [("self", f"{href}/IntervalBlock/{n}"), ("up", f"{href}/IntervalBlock")],
            stamp,
        )
        block = _espi(content, "IntervalBlock")
        interval = _espi(block, "interval")
        _espi(interval, "duration", 86400)
        _espi(interval, "start", int(day.timestamp()))
        for r in rows:
            item = _espi(block, "IntervalReading")
            period = _espi(item, "timePeriod")
            _espi(period, "duration", r.interval_minutes * 60)
            _espi(period, "start", int(r.timestamp.timestamp()) - r.interval_minutes * 60)
            _espi(item, "value", getattr(r, column))


def export_feed(
    meter: Meter, readings: list[MeterReading], start: datetime, end: datetime, now: datetime
) -> bytes:
    """An ESPI Atom feed of ``readings`` (raw intervals, Wh)."""
    stamp = utc_iso(now)
    base = f"/espi/1_1/resource/RetailCustomer/{meter.owner_id or 0}"
    up = f"{base}/UsagePoint/{meter.id}"
    feed = Element(f"{{{ATOM}}}feed")
    _atom(feed, "id", f"urn:uuid:{uuid.uuid5(_NS_UUID, f'{meter.id}:{start}:{end}')}")
    _atom(feed, "title", f"Gridex Green Button export: {meter.serial}")
    _atom(feed, "updated", stamp)
    _atom(feed, "link", rel="self", href=f"/api/v1/meters/{meter.id}/export/green-button")

    content = _entry(
        feed,
        f"{meter.id}:usagepoint",
        meter.serial,
        [("self", up), ("related", f"{up}/MeterReading")],
        stamp,
    )
    point = _espi(content, "UsagePoint")
    category = _espi(point, "ServiceCategory")
    _espi(category, "kind", 0)  # electricity

    for flow, column, label in (
        (FLOW_IMPORT, "consumed_wh", "import"),
        (FLOW_EXPORT, "produced_wh", "export"),
    ):
        mr = f"{up}/MeterReading/{flow}"
        rt_href = f"/espi/1_1/resource/ReadingType/{uuid.uuid5(_NS_UUID, f'{meter.id}:{flow}')}"
        content = _entry(
            feed,
            f"{meter.id}:meterreading:{flow}",
            f"{meter.serial} {label}",
            [
                ("self", mr),
                ("up", f"{up}/MeterReading"),
                ("related", rt_href),
                ("related", f"{mr}/IntervalBlock"),
            ],
            stamp,
        )
        _espi(content, "MeterReading")
        content = _entry(
            feed,
            f"{meter.id}:readingtype:{flow}",
            f"Energy {label} (Wh)",
            [("self", rt_href)],
            stamp,
        )
        reading_type = _espi(content, "ReadingType")
        _espi(reading_type, "accumulationBehaviour", 4)  # delta data
        _espi(reading_type, "commodity", 1)  # electricity, secondary metered
        _espi(reading_type, "flowDirection", flow)
        _espi(reading_type, "intervalLength", 900)
        _espi(reading_type, "kind", 12)  # energy
        _espi(reading_type, "powerOfTenMultiplier", 0)
        _espi(reading_type, "uom", UOM_WH)

        _interval_blocks(feed, meter, f"{meter.serial} {label}", mr, flow, column, readings, stamp)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(feed, encoding="unicode").encode()


@dataclass(slots=True)
class _Type:
    flow: int
    multiplier: int
    uom: int | None


def _text(el: Any, path: str) -> str | None:
    found = el.find(path, {"a": ATOM, "e": ESPI})
    return None if found is None or found.text is None else found.text.strip()


def _int(el: Any, path: str, default: int | None = None) -> int | None:
    text = _text(el, path)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise ValidationFailed(f"{path} is not an integer") from exc


def _links(entry: Any) -> list[tuple[str, str]]:
    return [
        (link.get("rel", ""), link.get("href", "")) for link in entry.findall("a:link", {"a": ATOM})
    ]


def _entries(root: Any) -> tuple[dict[str, _Type], dict[str, str], list[tuple[str, Any]]]:
    """ReadingTypes by href, the ReadingType href of each MeterReading, and the IntervalBlocks
    with the href of the MeterReading they belong to."""
    types: dict[str, _Type] = {}
    reading_type_of: dict[str, str] = {}
    blocks: list[tuple[str, Any]] = []
    for entry in root.findall("a:entry", _NS):
        links = _links(entry)
        self_href = next((h for r, h in links if r == "self"), "")
        content = entry.find("a:content", _NS)
        if content is None:
            continue
        if (rt := content.find("e:ReadingType", _NS)) is not None:
            flow = _int(rt, "e:flowDirection", FLOW_IMPORT)
            assert flow is not None
            types[self_href] = _Type(
                flow, _int(rt, "e:powerOfTenMultiplier", 0) or 0, _int(rt, "e:uom")
            )
        elif content.find("e:MeterReading", _NS) is not None:
            for rel, href in links:
                if rel == "related" and "/ReadingType/" in href:
                    reading_type_of[self_href] = href
        elif (block := content.find("e:IntervalBlock", _NS)) is not None:
            up = next((h for r, h in links if r == "up"), "")
            owner = (
                up.rsplit("/IntervalBlock", 1)[0]
                if up
                else self_href.rsplit("/IntervalBlock", 1)[0]
            )
            blocks.append((owner, block))
    return types, reading_type_of, blocks


def _values(block: Any, kind: _Type) -> list[tuple[int, int, int]]:
    """(start, duration, Wh) of a block's IntervalReadings, scaled by the type's multiplier; a
    value finer than a Wh (a negative multiplier) is rounded to the nearest Wh, half to even."""
    out = []
    for item in block.findall("e:IntervalReading", _NS):
        start = _int(item, "e:timePeriod/e:start")
        duration = _int(item, "e:timePeriod/e:duration")
        value = _int(item, "e:value")
        if start is None or duration is None or value is None:
            raise ValidationFailed("An IntervalReading lacks start, duration or value")
        if kind.multiplier >= 0:
            scaled = value * 10**kind.multiplier
        else:
            scaled = round_half_even(value, 10 ** (-kind.multiplier))
        out.append((start, duration, scaled))
    return out


def parse_feed(data: bytes, interval_minutes: int = 15) -> list[dict[str, Any]]:
    """The readings of an ESPI feed, one per interval end, as ingest payloads (kWh).

    An interval that spans several of the meter's intervals (``interval_minutes``), such as a
    utility's hourly data for a 15-minute meter, becomes that many readings with its energy
    spread evenly (whole Wh, the remainder to the first ones): the feed says nothing of the
    shape inside the hour, and the hour's sum stays exact. Any other duration is passed on as
    it is, for ingest to refuse that reading alone.

    IntervalBlocks are tied to their MeterReading by the ``up``/``self`` links and the
    MeterReading to its ReadingType by its ``related`` link; a feed with a single ReadingType
    needs no links.
    """
    try:
        root = SafeET.fromstring(data)
    except (SafeET.ParseError, DefusedXmlException) as exc:
        raise ValidationFailed("The body is not a well-formed, safe XML document") from exc
    if root.tag != f"{{{ATOM}}}feed":
        raise ValidationFailed("The body is not an Atom feed")
    types, reading_type_of, blocks = _entries(root)
    if not types:
        raise ValidationFailed("The feed has no ReadingType")
    only = next(iter(types.values())) if len(types) == 1 else None

    intervals: dict[tuple[int, int], dict[str, int]] = {}
    for owner, block in blocks:
        kind = types.get(reading_type_of.get(owner, ""), only)
        if kind is None:
            raise ValidationFailed("An IntervalBlock has no ReadingType")
        if kind.uom not in (None, UOM_WH):
            raise ValidationFailed(f"Only energy in Wh (uom {UOM_WH}) is imported")
        if kind.flow not in (FLOW_IMPORT, FLOW_EXPORT):
            raise ValidationFailed(f"Unsupported flowDirection {kind.flow}")
        field = "consumed" if kind.flow == FLOW_IMPORT else "produced"
        for start, duration, wh in _values(block, kind):
            intervals.setdefault((start + duration, duration), {})[field] = wh
    step = interval_minutes * 60
    readings = []
    for (end, duration), values in sorted(intervals.items()):
        parts = duration // step if duration > step and duration % step == 0 else 1
        length = duration // parts
        consumed = _spread(values.get("consumed", 0), parts)
        produced = _spread(values.get("produced", 0), parts)
        for i in range(parts):
            readings.append(
                {
                    "timestamp": utc_iso(
                        datetime.fromtimestamp(end - duration + (i + 1) * length, UTC)
                    ),
                    "energy_consumed_kwh": wh_to_kwh(consumed[i]),
                    "energy_produced_kwh": wh_to_kwh(produced[i]),
                    # Not whole minutes: ingest refuses this reading (and only this one).
                    "interval_minutes": length // 60 if length % 60 == 0 else length / 60,
                }
            )
    return readings


def _spread(wh: int, parts: int) -> list[int]:
    """``wh`` in ``parts`` whole-Wh shares that sum to it, the larger ones first."""
    share, extra = divmod(wh, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


async def export_meter(
    session: AsyncSession, rt: Runtime, meter: Meter, start: datetime | None, end: datetime | None
) -> bytes:
    """The meter's raw intervals starting in ``[from, to)`` (default: the last 30 days)."""
    end = end or rt.clock.now()
    start = start or end - timedelta(days=30)
    if start >= end or end - start > MAX_EXPORT:
        raise ValidationFailed("from must be before to, at most 366 days apart")
    a, b = repo.floor_quarter(start), repo.ceil_quarter(end)
    readings = await repo.raw_readings(session, meter.id, a, b, limit=MAX_EXPORT.days * 24 * 60)
    return export_feed(meter, readings, a, b, rt.clock.now())


async def import_meter(session: AsyncSession, rt: Runtime, meter: Meter, data: bytes) -> IngestOut:
    """Load a feed's intervals through the ingest path (a signed meter refuses them: they carry
    no device signature)."""
    payloads = parse_feed(data, meter.interval_minutes)
    ref = MeterRef.of(meter)
    items = [Item(i, raw, ref) for i, raw in enumerate(payloads)]
    return ingest_out(await ingest(session, rt, items, source="green_button"))
