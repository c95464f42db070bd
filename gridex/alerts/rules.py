"""The reading rules as pure functions: a reading against the meter's own profile, a voltage
against its region's range. No I/O; the job feeds them rows.

Energy is in Wh per reading; a profile is the meter's mean energy per minute for one hour of
the day, so readings of any interval length compare alike. Thresholds given "per 15 minutes"
scale with the reading's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Profile:
    """The meter's mean consumption and production per minute in one hour of the day, over
    ``days`` past days that have readings in that hour."""

    consumed_wh_per_minute: float
    produced_wh_per_minute: float
    days: int


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_days: int
    spike_factor: float
    spike_min_wh: int  # per 15 minutes
    drop_ratio: float
    drop_min_expected_wh: int  # per 15 minutes


def _per_quarter(wh: int, minutes: int) -> float:
    return wh * minutes / 15


def _expected(wh_per_minute: float, minutes: int) -> float:
    """The profile's Wh for a reading of ``minutes``, to the mWh: a mean of whole Wh times the
    minutes it was divided by gives those Wh back, not a float a hair above them."""
    return round(wh_per_minute * minutes, 3)


def consumption_spike(
    consumed_wh: int, minutes: int, profile: Profile | None, t: Thresholds
) -> dict[str, Any] | None:
    """Details of a spike when the reading consumed more than ``spike_factor`` x the profile's
    expectation and at least ``spike_min_wh`` above it; None when it did not, or when the
    profile has fewer than ``min_days`` days."""
    if profile is None or profile.days < t.min_days:
        return None
    expected = _expected(profile.consumed_wh_per_minute, minutes)
    if consumed_wh > expected * t.spike_factor and consumed_wh - expected >= _per_quarter(
        t.spike_min_wh, minutes
    ):
        return {
            "consumed_wh": consumed_wh,
            "expected_wh": round(expected),
            "ratio": round(consumed_wh / expected, 2) if expected else None,
            "profile_days": profile.days,
        }
    return None


def generation_drop(
    produced_wh: int, minutes: int, profile: Profile | None, t: Thresholds
) -> dict[str, Any] | None:
    """Details of a drop when the reading produced less than ``drop_ratio`` x the profile's
    expectation, where that expectation is at least ``drop_min_expected_wh`` (night hours and
    meters that seldom export never count); None otherwise."""
    if profile is None or profile.days < t.min_days:
        return None
    expected = _expected(profile.produced_wh_per_minute, minutes)
    if expected < _per_quarter(t.drop_min_expected_wh, minutes):
        return None
    if produced_wh < expected * t.drop_ratio:
        return {
            "produced_wh": produced_wh,
            "expected_wh": round(expected),
            "ratio": round(produced_wh / expected, 2),
            "profile_days": profile.days,
        }
    return None


def voltage_out_of_range(voltage: float | None, low: float, high: float) -> bool | None:
    """Whether the voltage lies outside [low, high]; None when the reading has no voltage."""
    if voltage is None:
        return None
    return not low <= voltage <= high
