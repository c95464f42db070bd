"""Errors of the market (their codes are part of the HTTP API, see docs/market.md)."""

from __future__ import annotations

from gridex.core.errors import GridexError


class GateClosed(GridexError):
    code, status, default_message = "GATE_CLOSED", 409, "The epoch no longer accepts orders"


class PriceOutOfBounds(GridexError):
    code, status = "PRICE_OUT_OF_BOUNDS", 422
    default_message = "The limit price is outside the region's price band"


class NoEligibleMeter(GridexError):
    code, status = "NO_ELIGIBLE_METER", 409
    default_message = "You need an active meter in the order's region that can deliver this side"


class SelfTrade(GridexError):
    code, status = "SELF_TRADE", 409
    default_message = "This order would trade with your own open order"


class ExceedsCapacity(GridexError):
    code, status = "EXCEEDS_CAPACITY", 422
    default_message = "The sell exceeds what your meters can export in one epoch"
