"""The tariff arithmetic, pure: which band and price is in force at an instant, and the priced
segments of an interval. Plain values in, plain values out: no database, clock or settings.

Time of use is defined in local clock time: an instant is converted to the region's local time
(``zoneinfo``), and the band whose clock times contain it applies. A day therefore has as many
hours of each band as the clock really shows: on a spring-forward day the skipped hour belongs to
no band, on a fall-back day the repeated hour counts twice (a 23-hour and a 25-hour day).

A band's ``days`` are weekdays 0 (Monday) .. 6 (Sunday); a listed holiday counts as a Sunday, so
``weekend`` bands apply on it and ``weekday`` bands do not. A band's clock times hold on each day
it applies to; a band whose end is not after its start (``22:00``-``06:00``) covers the evening and
the early morning of each of those days.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

MINUTES_PER_DAY = 24 * 60
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})
EVERY_DAY = frozenset(range(7))
HOLIDAY = 6  # a holiday is priced as a Sunday
STANDARD = "standard"  # the name of the hours no band covers

Source = Literal["override", "schedule", "default"]


@dataclass(frozen=True, slots=True)
class Band:
    """A time-of-use band: ``start`` and ``end`` are minutes after local midnight (``end`` up to
    1440); ``end <= start`` wraps past midnight."""

    name: str
    start: int
    end: int
    import_price_micros: int
    days: frozenset[int] = EVERY_DAY

    def spans(self) -> tuple[tuple[int, int], ...]:
        """The band's minutes of one day it applies to, as half-open ranges."""
        if self.end > self.start:
            return ((self.start, self.end),)
        return tuple(s for s in ((0, self.end), (self.start, MINUTES_PER_DAY)) if s[0] < s[1])


@dataclass(frozen=True, slots=True)
class Schedule:
    """A tariff as it applies from ``effective_from`` (``id`` None: the region's default prices,
    which have no bands)."""

    id: uuid.UUID | None
    effective_from: datetime
    import_price_micros: int
    feed_in_price_micros: int
    bands: tuple[Band, ...] = ()
    holidays: frozenset[date] = frozenset()

    def day_kind(self, day: date) -> int:
        return HOLIDAY if day in self.holidays else day.weekday()


@dataclass(frozen=True, slots=True)
class Override:
    """An admin's prices for ``[starts_at, ends_at)``; None leaves the schedule's."""

    id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    import_price_micros: int | None
    feed_in_price_micros: int | None
    created_at: datetime

    def active_at(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True, slots=True)
class TariffPrice:
    """The prices in force at one instant, micros per kWh. ``band`` is the time-of-use band's
    name (``standard`` outside every band); ``band_start``/``band_end`` its local clock times
    (None for ``standard``); ``source`` says what set the prices: an active override (for the
    prices it sets), the schedule, or the region's default (no schedule in force)."""

    import_price_micros: int
    feed_in_price_micros: int
    band: str
    source: Source
    schedule_id: uuid.UUID | None = None
    override_id: uuid.UUID | None = None
    band_start: str | None = None
    band_end: str | None = None


@dataclass(frozen=True, slots=True)
class PriceSegment:
    """``[start, end)`` in UTC with one set of prices (fields as :class:`TariffPrice`)."""

    start: datetime
    end: datetime
    band: str
    import_price_micros: int
    feed_in_price_micros: int
    source: Source
    schedule_id: uuid.UUID | None = None
    override_id: uuid.UUID | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


# --- clock times ----------------------------------------------------------------------------------


def parse_clock(value: str, *, end: bool = False) -> int:
    """``"HH:MM"`` to minutes after midnight; ``"24:00"`` only as an end. ValueError else."""
    hours, sep, minutes = value.partition(":")
    if (
        not sep
        or len(hours) != 2
        or len(minutes) != 2
        or not (hours.isascii() and hours.isdigit() and minutes.isascii() and minutes.isdigit())
    ):
        raise ValueError(f"{value!r} is not a time of day HH:MM")
    total = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or total > MINUTES_PER_DAY or (total == MINUTES_PER_DAY and not end):
        raise ValueError(f"{value!r} is not a time of day HH:MM (00:00 to 24:00)")
    return total


def clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_days(value: str | Sequence[str] | None) -> frozenset[int]:
    """``None``/``"all"``, ``"weekday"``, ``"weekend"`` or a list of ``"mon"`` .. ``"sun"``."""
    if value is None or value == "all":
        return EVERY_DAY
    if value == "weekday":
        return WEEKDAYS
    if value == "weekend":
        return WEEKEND
    if isinstance(value, str) or not value:
        raise ValueError('days must be "all", "weekday", "weekend" or a list of "mon" .. "sun"')
    days = set()
    for name in value:
        if name not in DAY_NAMES:
            raise ValueError(f"{name!r} is not a day (mon, tue, wed, thu, fri, sat, sun)")
        days.add(DAY_NAMES.index(name))
    return frozenset(days)


def day_names(days: Iterable[int]) -> list[str]:
    return [DAY_NAMES[d] for d in sorted(days)]


def band_overlaps(bands: Sequence[Band]) -> list[str]:
    """Why ``bands`` do not fit in a day: for each day of the week (holidays are Sundays) the
    bands that apply must not overlap. Empty when they fit."""
    problems = []
    for day in range(7):
        spans = sorted(
            (lo, hi, band.name) for band in bands if day in band.days for lo, hi in band.spans()
        )
        for (_, hi, first), (lo, _, second) in itertools.pairwise(spans):
            if lo < hi:
                problems.append(
                    f"bands {first!r} and {second!r} overlap on {DAY_NAMES[day]} at {clock(lo)}"
                )
    return problems


# --- one day's plan -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def day_plan(bands: tuple[Band, ...], kind: int) -> tuple[tuple[int, int, Band | None], ...]:
    """The minutes of a day of ``kind`` (0 Monday .. 6 Sunday or holiday), each range with its
    band (None: standard), covering 0..1440 without gaps."""
    spans = sorted((lo, hi, band) for band in bands if kind in band.days for lo, hi in band.spans())
    plan: list[tuple[int, int, Band | None]] = []
    at = 0
    for lo, hi, band in spans:
        if lo > at:
            plan.append((at, lo, None))
        plan.append((lo, hi, band))
        at = hi
    if at < MINUTES_PER_DAY:
        plan.append((at, MINUTES_PER_DAY, None))
    return tuple(plan)


def _scheduled(schedule: Schedule, band: Band | None) -> TariffPrice:
    if schedule.id is None:
        return TariffPrice(
            schedule.import_price_micros, schedule.feed_in_price_micros, STANDARD, "default"
        )
    if band is None:
        return TariffPrice(
            schedule.import_price_micros,
            schedule.feed_in_price_micros,
            STANDARD,
            "schedule",
            schedule.id,
        )
    return TariffPrice(
        band.import_price_micros,
        schedule.feed_in_price_micros,
        band.name,
        "schedule",
        schedule.id,
        band_start=clock(band.start),
        band_end=clock(band.end),
    )


def _with_override(price: TariffPrice, override: Override | None) -> TariffPrice:
    if override is None:
        return price
    return replace(
        price,
        import_price_micros=(
            price.import_price_micros
            if override.import_price_micros is None
            else override.import_price_micros
        ),
        feed_in_price_micros=(
            price.feed_in_price_micros
            if override.feed_in_price_micros is None
            else override.feed_in_price_micros
        ),
        source="override",
        override_id=override.id,
    )


def winning_override(overrides: Iterable[Override], at: datetime) -> Override | None:
    """The override in force at ``at``: of the active ones, the one created last."""
    active = [o for o in overrides if o.active_at(at)]
    return max(active, key=lambda o: (o.created_at, o.id.bytes)) if active else None


def in_force(schedules: Sequence[Schedule], at: datetime) -> Schedule | None:
    """Of ``schedules`` (any order), the one with the latest ``effective_from`` <= ``at``."""
    started = [s for s in schedules if s.effective_from <= at]
    return max(started, key=lambda s: s.effective_from) if started else None


def price_at(
    tz: tzinfo,
    schedule: Schedule,
    overrides: Iterable[Override],
    at: datetime,
) -> TariffPrice:
    """The prices at ``at`` under ``schedule`` (the one in force, or the default) and the
    overrides."""
    local = at.astimezone(tz)
    minute = local.hour * 60 + local.minute
    band = None
    for lo, hi, candidate in day_plan(schedule.bands, schedule.day_kind(local.date())):
        if lo <= minute < hi:
            band = candidate
            break
    return _with_override(_scheduled(schedule, band), winning_override(overrides, at))


# --- segments -------------------------------------------------------------------------------------

_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)


def _offset(tz: tzinfo, at: datetime) -> timedelta:
    offset = at.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def offset_pieces(tz: tzinfo, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut where the UTC offset of ``tz`` changes (a daylight-saving switch),
    found to the second."""
    pieces: list[tuple[datetime, datetime]] = []
    at = start
    while at < end:
        offset = _offset(tz, at)
        change = None
        probe = at
        while probe < end:
            nxt = min(probe + _DAY, end)
            last = nxt if nxt < end else max(end - _SECOND, probe)
            if last > probe and _offset(tz, last) != offset:
                lo, hi = probe, last  # offset(lo) is ``offset``, offset(hi) is not
                while hi - lo > _SECOND:
                    mid = lo + timedelta(seconds=((hi - lo) // _SECOND) // 2)
                    lo, hi = (mid, hi) if _offset(tz, mid) == offset else (lo, mid)
                change = hi
                break
            probe = nxt
        if change is None:
            pieces.append((at, end))
            break
        pieces.append((at, change))
        at = change
    return pieces


def _schedule_segments(
    tz: tzinfo, schedule: Schedule, start: datetime, end: datetime
) -> list[PriceSegment]:
    """Segments of ``[start, end)`` under one schedule: cut at its band edges, at local
    midnight and at daylight-saving switches."""
    out: list[PriceSegment] = []
    for piece_start, piece_end in offset_pieces(tz, start, end):
        offset = _offset(tz, piece_start)
        wall_start = (piece_start + offset).replace(tzinfo=None)
        wall_end = (piece_end + offset).replace(tzinfo=None)
        day = wall_start.date()
        while (midnight := datetime.combine(day, time())) < wall_end:
            for lo, hi, band in day_plan(schedule.bands, schedule.day_kind(day)):
                seg_start = max(midnight + timedelta(minutes=lo), wall_start)
                seg_end = min(midnight + timedelta(minutes=hi), wall_end)
                if seg_start < seg_end:
                    price = _scheduled(schedule, band)
                    out.append(
                        PriceSegment(
                            (seg_start - offset).replace(tzinfo=UTC),
                            (seg_end - offset).replace(tzinfo=UTC),
                            price.band,
                            price.import_price_micros,
                            price.feed_in_price_micros,
                            price.source,
                            price.schedule_id,
                        )
                    )
            day += _DAY
    return out


def price_segments(
    tz: tzinfo,
    default: Schedule,
    schedules: Sequence[Schedule],
    overrides: Sequence[Override],
    start: datetime,
    end: datetime,
) -> list[PriceSegment]:
    """Contiguous segments covering ``[start, end)`` (UTC), each with one set of prices, cut at
    band edges, local midnight, daylight-saving switches, schedule changes and override starts
    and ends. ``default`` prices the time before the first schedule in force."""
    if end <= start:
        return []
    ordered = sorted(schedules, key=lambda s: s.effective_from)
    base: list[PriceSegment] = []
    current = in_force(ordered, start) or default
    changes = [s for s in ordered if start < s.effective_from < end]
    at = start
    for nxt in [*changes, None]:
        until = end if nxt is None else nxt.effective_from
        base += _schedule_segments(tz, current, at, until)
        if nxt is not None:
            current, at = nxt, until
    relevant = [o for o in overrides if o.starts_at < end and o.ends_at > start]
    if not relevant:
        return base
    cuts = sorted({t for o in relevant for t in (o.starts_at, o.ends_at) if start < t < end})
    out: list[PriceSegment] = []
    for segment in base:
        inner = [t for t in cuts if segment.start < t < segment.end]
        bounds = [segment.start, *inner, segment.end]
        for lo, hi in itertools.pairwise(bounds):
            winner = winning_override(relevant, lo)
            piece = replace(segment, start=lo, end=hi)
            if winner is not None:
                price = _with_override(
                    TariffPrice(
                        piece.import_price_micros,
                        piece.feed_in_price_micros,
                        piece.band,
                        piece.source,
                        piece.schedule_id,
                    ),
                    winner,
                )
                piece = replace(
                    piece,
                    import_price_micros=price.import_price_micros,
                    feed_in_price_micros=price.feed_in_price_micros,
                    source="override",
                    override_id=winner.id,
                )
            out.append(piece)
    return out
