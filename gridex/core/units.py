"""Conversions between the API's units and the integers stored (Wh, micros).

Energy is stored as integer watt-hours and spoken as kWh with at most 3 decimals. Money is stored as
integer micro-units of the deployment currency and spoken as decimal strings with 6 decimals.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICROS_PER_UNIT = 1_000_000
WH_PER_KWH = 1_000
_MICRO = Decimal("0.000001")


# Bounds far beyond any real meter or wallet that keep every product of two stored values (an
# order's value: Wh x micros per kWh) well inside what Python, numpy int64 sums and the
# database's BIGINT handle: 1,000,000,000 kWh and 1,000,000,000 currency units.
MAX_WH = 10**12
MAX_MICROS = 10**15

# The decimal forms the API accepts in a string: ASCII digits, an optional sign and point. No
# exponents, underscores, spaces or other scripts' digits, which Python's Decimal would accept.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,16})?", re.ASCII)


class UnitError(ValueError):
    """A value cannot be represented exactly in the stored unit."""


def _decimal(value: Decimal | int | float | str, places: int) -> Decimal:
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise UnitError(f"{value!r} is not a plain decimal number (digits and one point)")
        if "." in value and len(value.split(".")[1]) > places:
            raise UnitError(f"{value!r} has more than {places} decimals")
    try:
        # str() of a float gives its shortest round-tripping form, so 0.1 stays 0.1.
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise UnitError(f"{value!r} is not a number") from exc
    if not result.is_finite():
        raise UnitError(f"{value!r} is not a finite number")
    return result


def plain_decimal(value: Decimal | int | float | str, places: int) -> Decimal:
    """A number (or plain decimal string with at most ``places`` decimals) as a ``Decimal``."""
    return _decimal(value, places)


def kwh_to_wh(value: Decimal | int | float | str) -> int:
    """kWh with at most 3 decimals to integer Wh; more precision is an error, not a rounding."""
    wh = _decimal(value, 3) * WH_PER_KWH
    if wh != wh.to_integral_value():
        raise UnitError(f"{value!r} kWh is not a whole number of Wh (at most 3 decimals)")
    if abs(wh) > MAX_WH:
        raise UnitError(f"{value!r} kWh is out of range (at most {MAX_WH // WH_PER_KWH} kWh)")
    return int(wh)


def wh_to_kwh(wh: int) -> float:
    """Integer Wh to kWh for JSON; exact because every Wh value has at most 3 decimals in kWh."""
    return float(Decimal(wh) / WH_PER_KWH)


def money_to_micros(value: Decimal | int | float | str) -> int:
    """A money amount (string or number) to integer micros; more than 6 decimals is an error."""
    micros = _decimal(value, 6) * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise UnitError(f"{value!r} has more than 6 decimals")
    if abs(micros) > MAX_MICROS:
        raise UnitError(f"{value!r} is out of range (at most {MAX_MICROS // MICROS_PER_UNIT})")
    return int(micros)


def micros_to_money(micros: int) -> str:
    """Integer micros to the API's decimal string, always with 6 decimals (``"0.125000"``)."""
    return str((Decimal(micros) / MICROS_PER_UNIT).quantize(_MICRO))


def round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half to even, in exact integer arithmetic (any sign
    of ``numerator``; no float): every rounded amount and price of the market, the engine's
    trade values, fees and clearing midpoints included, rounds here."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)  # floor division: 0 <= remainder < d
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient
