"""The tariff service: the one price lookup every caller uses (:func:`price_at`,
:func:`price_segments`), and the admins' schedules and overrides.

Prices are integer micros per kWh. A region without a schedule in force prices at its default:
what ``rt.extensions[DEFAULT_PRICES]`` answers (the app wires the market's price band there:
``max_price`` for import, ``min_price`` for feed-in), else the deployment's
``GRIDEX_MAX_PRICE``/``GRIDEX_MIN_PRICE``. Every function runs in the caller's unit of work and
only flushes.
"""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import cast

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.service import Principal
from gridex.core.errors import Conflict, NotFound, ValidationFailed
from gridex.core.runtime import Runtime
from gridex.core.schemas import EARLIEST
from gridex.core.units import money_to_micros
from gridex.regions import service as regions
from gridex.tariffs import repository
from gridex.tariffs.models import TariffOverride, TariffSchedule
from gridex.tariffs.rules import (
    Band,
    Override,
    PriceSegment,
    Schedule,
    TariffPrice,
    band_overlaps,
    clock,
    day_names,
    parse_clock,
    parse_days,
)
from gridex.tariffs.rules import price_at as _price_at
from gridex.tariffs.rules import price_segments as _price_segments

__all__ = [
    "DEFAULT_PRICES",
    "DefaultPrices",
    "PriceSegment",
    "TariffPrice",
    "cancel_override",
    "create_override",
    "create_schedule",
    "price_at",
    "price_segments",
]

# The prices of a region without a schedule in force, ``(import, feed_in)`` micros per kWh. A
# higher domain (the market's price band) answers; the app puts a function of this shape here.
DEFAULT_PRICES = "tariffs.default_prices"
DefaultPrices = Callable[[AsyncSession, Runtime, str], Awaitable[tuple[int, int]]]


# --- the one price lookup -------------------------------------------------------------------------


def region_tz(timezone: str) -> tzinfo:
    return zoneinfo.ZoneInfo(timezone)


async def _timezone(session: AsyncSession, region: str) -> tzinfo:
    known = await regions.get_region(session, region)
    return region_tz(known.timezone if known is not None else "UTC")


async def _default(session: AsyncSession, rt: Runtime, region: str) -> Schedule:
    hook = cast(DefaultPrices | None, rt.extensions.get(DEFAULT_PRICES))
    if hook is not None:
        import_price, feed_in_price = await hook(session, rt, region)
    else:
        import_price = money_to_micros(rt.settings.max_price)
        feed_in_price = money_to_micros(rt.settings.min_price)
    return Schedule(None, EARLIEST, import_price, feed_in_price)


_SCHEDULES: dict[uuid.UUID, Schedule] = {}


def schedule_of(row: TariffSchedule) -> Schedule:
    """The stored schedule as plain values (rows never change, so each is parsed once)."""
    found = _SCHEDULES.get(row.id)
    if found is None:
        found = Schedule(
            row.id,
            row.effective_from,
            row.import_price_micros,
            row.feed_in_price_micros,
            tuple(
                Band(
                    b["name"],
                    parse_clock(b["start"]),
                    parse_clock(b["end"], end=True),
                    int(b["import_price_micros"]),
                    parse_days(b["days"]),
                )
                for b in row.bands
            ),
            frozenset(date.fromisoformat(d) for d in row.holidays),
        )
        if len(_SCHEDULES) > 10_000:
            _SCHEDULES.clear()
        _SCHEDULES[row.id] = found
    return found


def override_of(row: TariffOverride) -> Override:
    return Override(
        row.id,
        row.starts_at,
        row.ends_at,
        row.import_price_micros,
        row.feed_in_price_micros,
        row.created_at,
    )


async def price_at(session: AsyncSession, rt: Runtime, region: str, at: datetime) -> TariffPrice:
    """The grid import and feed-in prices in force in ``region`` at ``at`` (micros per kWh):
    an active override's, else the time-of-use band's of the schedule in force, else the
    region's default (``source`` says which)."""
    tz = await _timezone(session, region)
    row = await repository.schedule_at(session, region, at)
    schedule = schedule_of(row) if row is not None else await _default(session, rt, region)
    overrides = [override_of(o) for o in await repository.overrides_at(session, region, at)]
    return _price_at(tz, schedule, overrides, at)


async def price_segments(
    session: AsyncSession, rt: Runtime, region: str, start: datetime, end: datetime
) -> list[PriceSegment]:
    """Contiguous UTC segments covering ``[start, end)``, each with one set of prices; cut at
    band edges, schedule changes, override starts and ends, local midnight and daylight-saving
    switches. Two queries whatever the length of the interval: price a month of readings by
    looking each one up in these segments (``bisect`` on ``start``), not by :func:`price_at`."""
    if end <= start:
        return []
    tz = await _timezone(session, region)
    rows = await repository.schedules_between(session, region, start, end)
    schedules = [schedule_of(r) for r in rows]
    default = (
        await _default(session, rt, region)
        if not schedules or schedules[0].effective_from > start
        else schedules[0]
    )
    overrides = [
        override_of(o) for o in await repository.overrides_between(session, region, start, end)
    ]
    return _price_segments(tz, default, schedules, overrides, start, end)


# --- admins: schedules and overrides --------------------------------------------------------------


def band_row(band: Band) -> dict[str, object]:
    return {
        "name": band.name,
        "start": clock(band.start),
        "end": clock(band.end),
        "import_price_micros": band.import_price_micros,
        "days": day_names(band.days),
    }


async def create_schedule(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    *,
    region: str,
    import_price_micros: int,
    feed_in_price_micros: int,
    bands: list[Band],
    holidays: list[date],
    effective_from: datetime | date | None,
    allow_past: bool = False,
) -> TariffSchedule:
    """Store a new schedule for ``region`` from ``effective_from`` (a date: local midnight of
    that day; None: now). It supersedes the schedule in force from then on; earlier prices are
    history and cannot change, so ``effective_from`` may not lie in the past (``allow_past``:
    only for seeding a region whose past nothing has priced yet, as the demo does)."""
    now = rt.clock.now()
    known = await regions.require_region(session, region)
    tz = region_tz(known.timezone)
    if effective_from is None:
        starts = now
    elif isinstance(effective_from, datetime):
        starts = effective_from
    else:
        starts = local_midnight(tz, effective_from)
    if starts < now and not allow_past:
        raise ValidationFailed(
            "effective_from must not be in the past: earlier prices are history",
            details={"field": "effective_from"},
        )
    problems = band_overlaps(bands)
    if problems:
        raise ValidationFailed(
            "; ".join(problems), details={"field": "time_of_use", "problems": problems}
        )
    lowest_import = min([import_price_micros, *(b.import_price_micros for b in bands)])
    if feed_in_price_micros > lowest_import:
        raise ValidationFailed(
            "export_price must not exceed any import price (the market's band runs from the "
            "feed-in to the import price)",
            details={"field": "export_price"},
        )
    if await repository.schedule_taking_effect(session, region, starts) is not None:
        raise Conflict("A schedule of this region already takes effect at that time")
    row = TariffSchedule(
        region=region,
        effective_from=starts,
        import_price_micros=import_price_micros,
        feed_in_price_micros=feed_in_price_micros,
        bands=[band_row(b) for b in bands],
        holidays=sorted(d.isoformat() for d in holidays),
        created_at=now,
        created_by_id=principal.user.id,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent schedule for the same instant
        raise Conflict("A schedule of this region already takes effect at that time") from exc
    record(
        session,
        at=now,
        action="tariff.schedule_created",
        actor_id=principal.user.id,
        subject_type="region",
        subject_id=region,
        details={
            "schedule_id": str(row.id),
            "effective_from": starts.isoformat(),
            "import_price_micros": import_price_micros,
            "feed_in_price_micros": feed_in_price_micros,
            "bands": row.bands,
            "holidays": row.holidays,
        },
    )
    return row


def local_midnight(tz: tzinfo, day: date) -> datetime:
    """The first instant of ``day`` in ``tz`` (where midnight is skipped, the first that exists)."""
    naive = datetime.combine(day, time())
    guess = naive.replace(tzinfo=tz).astimezone(UTC)
    # zoneinfo maps a skipped wall time with the offset before the switch; step forward to the
    # first instant whose local date is ``day``.
    while guess.astimezone(tz).date() < day:
        guess += timedelta(minutes=15)
    while (guess - timedelta(minutes=15)).astimezone(tz).date() == day:
        guess -= timedelta(minutes=15)
    return guess


async def create_override(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    *,
    region: str,
    import_price_micros: int | None,
    feed_in_price_micros: int | None,
    reason: str,
    starts_at: datetime | None,
    expires_at: datetime,
) -> TariffOverride:
    """An admin's prices for ``[starts_at (default now), expires_at)``, audited."""
    now = rt.clock.now()
    await regions.require_region(session, region)
    starts = starts_at or now
    if import_price_micros is None and feed_in_price_micros is None:
        raise ValidationFailed(
            "An override sets import_price, export_price or both", details={"field": "import_price"}
        )
    if starts < now:
        raise ValidationFailed(
            "starts_at must not be in the past: earlier prices are history",
            details={"field": "starts_at"},
        )
    if expires_at <= starts:
        raise ValidationFailed(
            "expires_at must be after the override starts", details={"field": "expires_at"}
        )
    if (
        import_price_micros is not None
        and feed_in_price_micros is not None
        and feed_in_price_micros > import_price_micros
    ):
        raise ValidationFailed(
            "export_price must not exceed import_price", details={"field": "export_price"}
        )
    row = TariffOverride(
        region=region,
        import_price_micros=import_price_micros,
        feed_in_price_micros=feed_in_price_micros,
        reason=reason,
        starts_at=starts,
        expires_at=expires_at,
        ends_at=expires_at,
        created_at=now,
        created_by_id=principal.user.id,
    )
    session.add(row)
    await session.flush()
    record(
        session,
        at=now,
        action="tariff.override_created",
        actor_id=principal.user.id,
        subject_type="region",
        subject_id=region,
        details={
            "override_id": str(row.id),
            "import_price_micros": import_price_micros,
            "feed_in_price_micros": feed_in_price_micros,
            "reason": reason,
            "starts_at": starts.isoformat(),
            "expires_at": expires_at.isoformat(),
        },
    )
    return row


async def cancel_override(
    session: AsyncSession, rt: Runtime, principal: Principal, override_id: uuid.UUID
) -> TariffOverride:
    """End an override now (one not started yet never applies); 409 once it has ended."""
    now = rt.clock.now()
    row = await repository.get_override(session, override_id)
    if row is None:
        raise NotFound("No such tariff override")
    if row.ends_at <= now:
        raise Conflict("The override has already ended")
    row.cancelled_at = now
    row.cancelled_by_id = principal.user.id
    row.ends_at = max(now, row.starts_at)
    await session.flush()
    record(
        session,
        at=now,
        action="tariff.override_cancelled",
        actor_id=principal.user.id,
        subject_type="region",
        subject_id=row.region,
        details={"override_id": str(row.id), "reason": row.reason},
    )
    return row
