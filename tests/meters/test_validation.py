"""The quick path accepts only what the general path accepts, and builds the same reading."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridex.meters.models import MeterStatus
from gridex.meters.validation import (
    InvalidReading,
    Item,
    MeterRef,
    Window,
    parse_reading,
    quick_reading,
)

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
WINDOW = Window(NOW - timedelta(days=365), NOW + timedelta(minutes=5))
METER = MeterRef(uuid.uuid4(), "SM_1", MeterStatus.active, 10_000, 15, None, False)

# Mostly small plain values (accepted unless another field is off), and every kind of odd one.
_energy = st.one_of(
    st.sampled_from([0, 0.001, 0.1, 0.125]),
    st.sampled_from([0, 0.05, 0.166]),
    st.integers(min_value=-2, max_value=4),
    st.floats(min_value=-1, max_value=4),
    st.sampled_from([2.5, 2.501, 1e-4, float("nan"), float("inf"), "0.5", None, True]),
)
# Mostly interval ends inside the window, and any minute over a little more than a year.
_minutes = st.one_of(
    st.integers(min_value=-2000, max_value=1).map(lambda quarters: quarters * 15),
    st.integers(min_value=-366 * 24 * 60, max_value=20),
)
_optional = st.one_of(
    st.none(), st.floats(0, 1), st.integers(0, 230), st.floats(allow_nan=False), st.just("x")
)
_payload = st.fixed_dictionaries(
    {
        "timestamp": st.builds(
            lambda m, z: (NOW + timedelta(minutes=m)).astimezone(z).isoformat(),
            _minutes,
            st.sampled_from([UTC, timezone(timedelta(hours=2))]),
        ),
        "energy_consumed_kwh": _energy,
        "energy_produced_kwh": _energy,
    },
    optional={
        "interval_minutes": st.sampled_from([15, 15, 5, 1, 7, 0, True, "15"]),
        "peak_demand_kw": _energy,
        "power_factor": _optional,
        "voltage": _optional,
        "current": _optional,
        "frequency": _optional,
        "metadata": st.sampled_from([None, {"firmware": "1.2"}, [1]]),
        "signature": st.sampled_from([None, None, 5]),
    },
)


def _general(item: Item) -> Any:
    try:
        return parse_reading(item, WINDOW)
    except InvalidReading as exc:
        return (exc.code, exc.reason)


@settings(max_examples=400)
@given(payload=_payload)
def test_quick_path_agrees_with_the_general_path(payload: dict[str, Any]) -> None:
    item = Item(0, payload, METER)
    quick = quick_reading(item, WINDOW)
    if quick is not None:
        assert quick == parse_reading(item, WINDOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"energy_consumed_kwh": 2.501}, "over_capacity"),  # 10 kW x 15 min = 2.5 kWh
        ({"energy_produced_kwh": -0.001}, "negative"),
        ({"peak_demand_kw": -1}, "negative"),
        ({"timestamp": "2026-03-04T12:15:00Z"}, "future_timestamp"),
        ({"timestamp": "2025-03-04T11:45:00Z"}, "too_old"),
        ({"timestamp": "2026-03-04T11:50:00Z"}, "misaligned"),
        ({"interval_minutes": 7}, "malformed"),
        ({"voltage": -1}, "out_of_range"),
        ({"power_factor": 1.5}, "out_of_range"),
        ({"meter": "SM_2"}, "malformed"),
    ],
)
def test_each_rule_refuses_on_both_paths(change: dict[str, Any], reason: str) -> None:
    valid = {"timestamp": "2026-03-04T12:00:00Z", "energy_consumed_kwh": 2.5}
    assert quick_reading(Item(0, {**valid, "energy_produced_kwh": 0}, METER), WINDOW) is not None
    item = Item(0, {**valid, "energy_produced_kwh": 0, **change}, METER)
    assert quick_reading(item, WINDOW) is None
    assert _general(item) == ("VALIDATION_ERROR", reason)
