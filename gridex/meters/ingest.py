"""The ingest path: one validation and storage path for HTTP, batch, MQTT and Green Button.

Set-based on purpose: each reading is validated (``validation``), then the new ones are stored
with their rollups in bulk (``store``), each meter row is updated once per call, and only rows
that were not inserted are read back, to tell a duplicate from a conflict. The writes start only
after validation, through ``begin_write``: on SQLite that is where a call queues for the single
write lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from prometheus_client import Counter
from sqlalchemy import Table, Update, bindparam, case, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.db import begin_write
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.schemas import storable_json
from gridex.meters.events import status_changed
from gridex.meters.models import Meter, RejectedReading
from gridex.meters.store import Key, plan_store, store, stored_values
from gridex.meters.validation import (
    InvalidReading,
    Item,
    MeterRef,
    Reading,
    Window,
    parse_reading,
    quick_reading,
)

READINGS_INGESTED = Counter(
    "gridex_readings_ingested_total",
    "Meter readings by ingest path and outcome",
    ["source", "outcome"],
)


@dataclass(slots=True)
class Rejection:
    index: int
    code: str  # API error code
    reason: str  # finer cause, kept in the dead-letter table
    message: str
    payload: Any = None
    meter_id: uuid.UUID | None = None
    meter_serial: str | None = None

    @classmethod
    def of(cls, item: Item, code: str, reason: str, message: str) -> Rejection:
        meter = item.meter
        if meter is None:
            return cls(item.index, code, reason, message, item.payload, None, item.serial)
        return cls(item.index, code, reason, message, item.payload, meter.id, meter.serial)


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


_CONFLICT = "READING_CONFLICT"


def _validate(items: Sequence[Item], window: Window, result: IngestResult) -> list[Reading]:
    """The valid readings of ``items``, one per (meter, interval end); the others are answered
    in ``result`` (a repeat with the same values is a duplicate, other values a conflict)."""
    valid: list[Reading] = []
    seen: dict[tuple[int, datetime], Reading] = {}  # by (meter id as int: hashed in C, end)
    for item in items:
        reading = quick_reading(item, window)
        if reading is None:
            try:
                reading = parse_reading(item, window)
            except InvalidReading as exc:
                result.rejected.append(Rejection.of(item, exc.code, exc.reason, exc.message))
                continue
        key = (reading.meter.id.int, reading.timestamp)
        first = seen.get(key)
        if first is None:
            seen[key] = reading
            valid.append(reading)
        elif (first.consumed_wh, first.produced_wh) == (reading.consumed_wh, reading.produced_wh):
            result.duplicates += 1
        else:
            message = "Another reading for this interval in the same request has other values"
            result.rejected.append(Rejection.of(item, _CONFLICT, "conflict", message))
    return valid


async def _classify_missed(
    session: AsyncSession,
    missed: dict[Key, tuple[int, int] | None],
    valid: list[Reading],
    items: dict[int, Item],
    result: IngestResult,
) -> None:
    """Valid readings that were not inserted: a duplicate of the stored one, or a conflict.

    ``missed``: their keys, with the stored values when already read; the others are read here."""
    existing = {k: v for k, v in missed.items() if v is not None}
    unknown = [k for k, v in missed.items() if v is None]
    if unknown:
        existing.update(await stored_values(session, unknown))
    for r in valid:
        key = (r.meter.id, r.timestamp)
        if key not in missed:
            continue
        if existing.get(key) == (r.consumed_wh, r.produced_wh):
            result.duplicates += 1
        else:
            message = "A reading with other values is stored for this interval"
            result.rejected.append(Rejection.of(items[r.index], _CONFLICT, "conflict", message))


def _touch_statement(now: datetime) -> Update:
    """Per meter (``m_id``): the newest reading and liveness deadline only ever move forward, a
    live reading (``m_live``) sets the online flag."""
    table = cast(Table, Meter.__table__)
    c = table.c
    return (
        update(table)
        .where(c.id == bindparam("m_id"))
        .values(
            last_reading_at=case(
                (
                    c.last_reading_at.is_(None) | (c.last_reading_at < bindparam("m_ts")),
                    bindparam("m_ts"),
                ),
                else_=c.last_reading_at,
            ),
            offline_due_at=case(
                (
                    c.offline_due_at.is_(None) | (c.offline_due_at < bindparam("m_due")),
                    bindparam("m_due"),
                ),
                else_=c.offline_due_at,
            ),
            online=c.online | bindparam("m_live"),
            last_seen_at=now,
        )
    )


async def _touch_meters(
    session: AsyncSession,
    rt: Runtime,
    newest: dict[uuid.UUID, tuple[MeterRef, datetime]],
    now: datetime,
) -> None:
    """Newest reading, liveness deadline and online flag, one UPDATE per meter (sorted)."""
    n = rt.settings.offline_after_intervals
    params = []
    came_online = []
    for meter_id in sorted(newest):
        meter, ts = newest[meter_id]
        due = ts + timedelta(minutes=meter.interval_minutes * n)
        # A backfilled old reading does not bring a meter back online.
        live = due > now
        params.append({"m_id": meter_id, "m_ts": ts, "m_due": due, "m_live": live})
        emit(
            session,
            rt.pubsub,
            [f"meter:{meter_id}"],
            "reading_received",
            {"meter_id": str(meter_id), "timestamp": utc_iso(ts)},
            now,
        )
        if live and not meter.online:
            came_online.append((meter_id, ts))
    if params:
        await session.execute(_touch_statement(now), params)
    for meter_id, ts in came_online:
        details = {"timestamp": utc_iso(ts)}
        status_changed(
            session, rt.pubsub, meter_id, "online", reason="reading", details=details, now=now
        )


def dead_letters(
    rejections: Iterable[Rejection], source: str, now: datetime
) -> list[RejectedReading]:
    return [
        RejectedReading(
            id=uuid.uuid4(),
            received_at=now,
            source=source,
            meter_id=r.meter_id,
            meter_serial=r.meter_serial,
            code=r.code,
            reason=r.reason,
            message=r.message[:500],
            payload=storable_json(r.payload),
        )
        for r in rejections
    ]


async def ingest(
    session: AsyncSession, rt: Runtime, items: Sequence[Item], *, source: str
) -> IngestResult:
    """Validate and store ``items``; rollups, meter state and dead letters in the same unit of work.

    Never raises for a bad reading: each one is answered in the result and kept in the dead-letter
    table. The caller's session commits.
    """
    now = rt.clock.now()
    result = IngestResult()
    valid = _validate(items, Window.at(now, rt.settings), result)
    plan = plan_store(session, valid, source, now)
    if valid or result.rejected:
        # Validation is done and everything from here on writes: on SQLite, take the write lock
        # now (in turn with other writers) and hold it only for the writes.
        await begin_write(session)
    stored = await store(session, plan)
    result.accepted = len(valid) - len(stored.missed)
    if stored.missed:
        await _classify_missed(
            session, stored.missed, valid, {item.index: item for item in items}, result
        )
    if stored.newest:
        refs = {r.meter.id: r.meter for r in valid}
        newest = {m: (refs[m], ts) for m, ts in stored.newest.items()}
        await _touch_meters(session, rt, newest, now)
    if result.rejected:
        result.rejected.sort(key=lambda r: r.index)
        session.add_all(dead_letters(result.rejected, source, now))
        await session.flush()
    READINGS_INGESTED.labels(source, "accepted").inc(result.accepted)
    READINGS_INGESTED.labels(source, "duplicate").inc(result.duplicates)
    READINGS_INGESTED.labels(source, "rejected").inc(len(result.rejected))
    return result
