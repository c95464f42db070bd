"""The pure tariff arithmetic: bands by local clock time and day type, holidays, daylight-saving
days, schedule changes and overrides, and segments that agree with the point lookup."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridex.tariffs.rules import (
    WEEKDAYS,
    WEEKEND,
    Band,
    Override,
    Schedule,
    band_overlaps,
    parse_clock,
    parse_days,
    price_at,
    price_segments,
)
from gridex.tariffs.schemas import BandIn

BERLIN = ZoneInfo("Europe/Berlin")
SCHEDULE_ID = uuid.UUID(int=1)
# Base 0.30; weekday evening peak 17:00-21:00 at 0.42; night off-peak 22:00-06:00 every day
# at 0.20; weekend midday 11:00-15:00 at 0.25; feed-in 0.08; 2026-04-03 (a Friday) a holiday.
SCHEDULE = Schedule(
    SCHEDULE_ID,
    datetime(2026, 1, 1, tzinfo=UTC),
    300_000,
    80_000,
    (
        Band("peak", 17 * 60, 21 * 60, 420_000, WEEKDAYS),
        Band("off_peak", 22 * 60, 6 * 60, 200_000),
        Band("weekend_midday", 11 * 60, 15 * 60, 250_000, WEEKEND),
    ),
    frozenset({date(2026, 4, 3)}),
)
DEFAULT = Schedule(None, datetime(1970, 1, 1, tzinfo=UTC), 1_000_000, 10_000)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


def hours_by_band(start: datetime, end: datetime, **kw: object) -> dict[str, float]:
    out: dict[str, float] = {}
    for segment in price_segments(
        BERLIN,
        DEFAULT,
        kw.get("schedules", [SCHEDULE]),  # type: ignore[arg-type]
        kw.get("overrides", []),  # type: ignore[arg-type]
        start,
        end,
    ):
        out[segment.band] = out.get(segment.band, 0) + segment.seconds / 3600
    return out


@pytest.mark.parametrize(
    ("when", "band", "price"),
    [
        (local(2026, 3, 4, 16, 59), "standard", 300_000),  # a Wednesday, just before the peak
        (local(2026, 3, 4, 17, 0), "peak", 420_000),  # the peak starts at 17:00 local
        (local(2026, 3, 4, 20, 59), "peak", 420_000),
        (local(2026, 3, 4, 21, 0), "standard", 300_000),  # and ends at 21:00
        (local(2026, 3, 4, 22, 0), "off_peak", 200_000),
        (local(2026, 3, 5, 5, 59), "off_peak", 200_000),  # wraps past midnight
        (local(2026, 3, 5, 6, 0), "standard", 300_000),
        (local(2026, 3, 7, 18, 0), "standard", 300_000),  # Saturday: no weekday peak
        (local(2026, 3, 7, 12, 0), "weekend_midday", 250_000),
        (local(2026, 4, 3, 18, 0), "standard", 300_000),  # Good Friday: a holiday is a Sunday
        (local(2026, 4, 3, 12, 0), "weekend_midday", 250_000),
        (local(2026, 4, 2, 18, 0), "peak", 420_000),  # the Thursday before is a weekday
    ],
)
def test_band_edges_day_types_and_holidays(when: datetime, band: str, price: int) -> None:
    found = price_at(BERLIN, SCHEDULE, [], when)
    assert (found.band, found.import_price_micros, found.feed_in_price_micros) == (
        band,
        price,
        80_000,
    )
    assert found.source == "schedule"
    assert found.schedule_id == SCHEDULE_ID


def test_band_times_are_local_summer_and_winter() -> None:
    # 17:00 in Berlin is 16:00 UTC in winter (CET) and 15:00 UTC in summer (CEST).
    assert price_at(BERLIN, SCHEDULE, [], datetime(2026, 3, 4, 16, 0, tzinfo=UTC)).band == "peak"
    assert price_at(BERLIN, SCHEDULE, [], datetime(2026, 6, 3, 15, 0, tzinfo=UTC)).band == "peak"
    assert price_at(BERLIN, SCHEDULE, [], datetime(2026, 6, 3, 14, 59, tzinfo=UTC)).band == (
        "standard"
    )


def test_spring_forward_day_has_23_hours_and_one_less_off_peak_hour() -> None:
    # 2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST.
    day = hours_by_band(local(2026, 3, 29), local(2026, 3, 30))
    assert sum(day.values()) == 23
    # Off-peak 00:00-06:00 lost the skipped hour (5 h), plus 22:00-24:00 (2 h).
    assert day == {"off_peak": 7, "standard": 12, "weekend_midday": 4}
    # The skipped hour has no price of its own: 01:00 UTC is 03:00 CEST.
    assert price_at(BERLIN, SCHEDULE, [], datetime(2026, 3, 29, 1, 0, tzinfo=UTC)).band == (
        "off_peak"
    )


def test_fall_back_day_has_25_hours_and_one_more_off_peak_hour() -> None:
    # 2026-10-25 (Sunday): 03:00 CEST falls back to 02:00 CET; 02:00-03:00 happens twice.
    day = hours_by_band(local(2026, 10, 25), local(2026, 10, 26))
    assert sum(day.values()) == 25
    assert day == {"off_peak": 9, "standard": 12, "weekend_midday": 4}
    # Both 02:30s are off-peak.
    for utc_hour in (0, 1):
        at = datetime(2026, 10, 25, utc_hour, 30, tzinfo=UTC)
        assert at.astimezone(BERLIN).hour == 2
        assert price_at(BERLIN, SCHEDULE, [], at).band == "off_peak"


def test_a_weekday_prices_each_band_for_its_clock_hours() -> None:
    day = hours_by_band(local(2026, 3, 4), local(2026, 3, 5))
    assert day == {"off_peak": 8, "peak": 4, "standard": 12}


def test_segments_cut_at_local_midnight_schedule_change_and_override() -> None:
    later = Schedule(uuid.UUID(int=2), local(2026, 3, 5, 12), 310_000, 90_000, (), frozenset())
    override = Override(
        uuid.UUID(int=3),
        local(2026, 3, 5, 18),
        local(2026, 3, 5, 19, 30),
        500_000,
        None,
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    segments = price_segments(
        BERLIN, DEFAULT, [SCHEDULE, later], [override], local(2026, 3, 4, 20), local(2026, 3, 6)
    )
    for before, after in itertools.pairwise(segments):
        assert before.end == after.start
    bounds = [s.start.astimezone(BERLIN).strftime("%d %H:%M") for s in segments]
    assert bounds == [
        "04 20:00",  # peak until 21:00
        "04 21:00",
        "04 22:00",
        "05 00:00",  # local midnight
        "05 06:00",
        "05 12:00",  # the later schedule takes over (no bands)
        "05 18:00",  # the override
        "05 19:30",
    ]
    assert [s.import_price_micros for s in segments] == [
        420_000,
        300_000,
        200_000,
        200_000,
        300_000,
        310_000,
        500_000,
        310_000,
    ]
    assert segments[6].source == "override"
    assert segments[6].feed_in_price_micros == 90_000  # the override leaves feed-in alone
    assert segments[6].override_id == uuid.UUID(int=3)
    assert segments[5].schedule_id == uuid.UUID(int=2)


def test_before_the_first_schedule_the_default_prices_apply() -> None:
    found = price_segments(
        BERLIN,
        DEFAULT,
        [SCHEDULE],
        [],
        datetime(2025, 12, 31, 22, tzinfo=UTC),
        SCHEDULE.effective_from,
    )
    assert {(s.band, s.source, s.import_price_micros) for s in found} == {
        ("standard", "default", 1_000_000)
    }


def test_the_override_created_last_wins_where_they_overlap() -> None:
    first = Override(
        uuid.UUID(int=5),
        local(2026, 3, 4, 10),
        local(2026, 3, 4, 14),
        1,
        1,
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    second = Override(
        uuid.UUID(int=4),
        local(2026, 3, 4, 12),
        local(2026, 3, 4, 13),
        2,
        None,
        datetime(2026, 3, 2, tzinfo=UTC),
    )
    at = local(2026, 3, 4, 12, 30)
    found = price_at(BERLIN, SCHEDULE, [first, second], at)
    assert (found.import_price_micros, found.feed_in_price_micros) == (2, 80_000)
    assert (
        price_at(BERLIN, SCHEDULE, [first, second], local(2026, 3, 4, 13)).import_price_micros == 1
    )
    assert price_at(BERLIN, SCHEDULE, [first, second], local(2026, 3, 4, 14)).source == "schedule"


def test_overlapping_bands_are_found_per_day() -> None:
    assert band_overlaps(list(SCHEDULE.bands)) == []
    clash = [
        Band("a", 17 * 60, 21 * 60, 1, WEEKDAYS),
        Band("b", 20 * 60, 22 * 60, 1, parse_days(["fri", "sat"])),
    ]
    assert band_overlaps(clash) == ["bands 'a' and 'b' overlap on fri at 20:00"]
    wrap = [Band("night", 22 * 60, 6 * 60, 1), Band("early", 5 * 60, 7 * 60, 1, WEEKEND)]
    assert band_overlaps(wrap) == [
        "bands 'night' and 'early' overlap on sat at 05:00",
        "bands 'night' and 'early' overlap on sun at 05:00",
    ]


ARABIC_NOON = "\u0661\u0662:\u0660\u0660"


@pytest.mark.parametrize("text", ["7:00", "24:01", "12:60", "ab:cd", ARABIC_NOON, "12-00"])
def test_clock_times_are_strict(text: str) -> None:
    with pytest.raises(ValueError, match="time of day"):
        parse_clock(text, end=True)


def test_midnight_is_only_an_end() -> None:
    assert parse_clock("24:00", end=True) == 1440
    with pytest.raises(ValueError, match="00:00 to 24:00"):
        parse_clock("24:00")


zones = st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])
instants = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001 (hypothesis draws naive values)
    max_value=datetime(2027, 12, 31),  # noqa: DTZ001
).map(lambda d: d.replace(tzinfo=UTC, microsecond=0))


@settings(max_examples=60, deadline=None)
@given(
    zone=zones,
    start=instants,
    hours=st.integers(1, 24 * 9),
    probes=st.lists(st.floats(0, 1), max_size=8),
)
def test_segments_are_contiguous_and_agree_with_the_point_lookup(
    zone: str, start: datetime, hours: int, probes: list[float]
) -> None:
    tz = ZoneInfo(zone)
    end = start + timedelta(hours=hours)
    override = Override(
        uuid.UUID(int=9),
        start + timedelta(hours=hours / 3),
        start + timedelta(hours=hours / 2),
        123,
        None,
        start,
    )
    segments = price_segments(tz, DEFAULT, [SCHEDULE], [override], start, end)
    assert segments[0].start == start
    assert segments[-1].end == end
    for a, b in itertools.pairwise(segments):
        assert a.end == b.start
        assert a.start < a.end
    for fraction in [0.0, *probes]:
        at = start + (end - start) * fraction
        if at >= end:
            continue
        at = (
            at.replace(second=0, microsecond=0)
            if at.replace(second=0, microsecond=0) >= start
            else start
        )
        segment = next(s for s in segments if s.start <= at < s.end)
        point = price_at(tz, SCHEDULE, [override], at)
        assert (
            segment.band,
            segment.import_price_micros,
            segment.feed_in_price_micros,
            segment.source,
        ) == (point.band, point.import_price_micros, point.feed_in_price_micros, point.source)


def test_a_whole_day_band_and_an_empty_one() -> None:
    whole = BandIn.model_validate(
        {"start": "00:00", "end": "24:00", "import_price": "0.25", "days": "weekend"}
    ).band(300_000)
    assert (whole.name, whole.spans(), whole.days) == ("off_peak", ((0, 1440),), WEEKEND)
    with pytest.raises(ValueError, match="end must differ"):
        BandIn.model_validate({"start": "07:00", "end": "07:00", "import_price": "0.25"})
