"""The reading rules as pure functions: thresholds hold for any reading and profile."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gridex.alerts import rules

T = rules.Thresholds(
    min_days=3, spike_factor=3.0, spike_min_wh=250, drop_ratio=0.25, drop_min_expected_wh=100
)
minutes = st.sampled_from([1, 5, 15, 30, 60])
wh = st.integers(min_value=0, max_value=1_000_000)
rate = st.floats(min_value=0, max_value=1_000, allow_nan=False)
days = st.integers(min_value=0, max_value=14)


@given(wh, minutes, rate, days)
def test_a_spike_is_above_both_thresholds(consumed: int, m: int, per_min: float, d: int) -> None:
    profile = rules.Profile(per_min, 0.0, d)
    found = rules.consumption_spike(consumed, m, profile, T)
    expected = round(per_min * m, 3)
    if found is not None:
        assert d >= T.min_days
        assert consumed > expected * T.spike_factor
        assert consumed - expected >= T.spike_min_wh * m / 15
    elif d >= T.min_days and consumed - expected >= T.spike_min_wh * m / 15:
        assert consumed <= expected * T.spike_factor


@given(wh, minutes, rate, days)
def test_a_drop_needs_an_expectation_worth_judging(
    produced: int, m: int, per_min: float, d: int
) -> None:
    profile = rules.Profile(0.0, per_min, d)
    found = rules.generation_drop(produced, m, profile, T)
    expected = round(per_min * m, 3)
    if found is not None:
        assert d >= T.min_days
        assert expected >= T.drop_min_expected_wh * m / 15
        assert produced < expected * T.drop_ratio


def test_examples() -> None:
    usual = rules.Profile(200 / 15, 1000 / 15, 5)  # 0.2 kWh in, 1 kWh out per quarter hour
    assert rules.consumption_spike(500, 15, usual, T) is None  # 2.5 x: below the factor
    assert rules.consumption_spike(650, 15, usual, T) == {
        "consumed_wh": 650,
        "expected_wh": 200,
        "ratio": 3.25,
        "profile_days": 5,
    }
    assert rules.consumption_spike(650, 15, rules.Profile(200 / 15, 0, 2), T) is None
    assert rules.generation_drop(240, 15, usual, T) is not None
    assert rules.generation_drop(250, 15, usual, T) is None
    night = rules.Profile(0, 5 / 15, 5)  # 5 Wh expected: not worth judging
    assert rules.generation_drop(0, 15, night, T) is None
    assert rules.voltage_out_of_range(None, 207, 253) is None
    assert rules.voltage_out_of_range(207.0, 207, 253) is False
    assert rules.voltage_out_of_range(253.1, 207, 253) is True
