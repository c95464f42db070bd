from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridex.core.units import (
    MAX_MICROS,
    MAX_WH,
    UnitError,
    kwh_to_wh,
    micros_to_money,
    money_to_micros,
)


@pytest.mark.parametrize(
    "text",
    [
        "\u0661\u0662.\u0665",  # Arabic-Indic digits
        "1_000",
        " 1.5",
        "1.5 ",
        "1e3",
        "+1",
        "0x10",
        "1.0000000000000000000000000000",  # 30 decimals, even if they are zeros
        "",
        ".5",
        "NaN",
    ],
)
def test_money_strings_are_plain_ascii_decimals(text: str) -> None:
    with pytest.raises(UnitError):
        money_to_micros(text)


def test_money_and_energy_in_range_convert_exactly() -> None:
    assert money_to_micros("0.125") == 125_000
    assert money_to_micros("-2.5") == -2_500_000
    assert money_to_micros(0.1) == 100_000
    assert kwh_to_wh("1.234") == 1234
    assert kwh_to_wh(6.8) == 6800
    with pytest.raises(UnitError, match="more than 3 decimals"):
        kwh_to_wh("1.2345")


@pytest.mark.parametrize("value", [6.8e16, 1e20, "1000000000.001", 10**10])
def test_energy_far_beyond_any_meter_is_refused(value: float | str | int) -> None:
    with pytest.raises(UnitError, match="out of range"):
        kwh_to_wh(value)


def test_money_far_beyond_any_wallet_is_refused() -> None:
    assert money_to_micros(MAX_MICROS // 1_000_000) == MAX_MICROS
    with pytest.raises(UnitError, match="out of range"):
        money_to_micros(MAX_MICROS // 1_000_000 + 1)
    assert kwh_to_wh(MAX_WH // 1000) == MAX_WH


@given(st.integers(min_value=-MAX_MICROS, max_value=MAX_MICROS))
def test_money_round_trips_through_its_string(micros: int) -> None:
    assert money_to_micros(micros_to_money(micros)) == micros
    assert Decimal(micros_to_money(micros)) * 1_000_000 == micros
