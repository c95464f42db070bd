"""The rules an order must pass to be placed, each defined once, as the SQL condition that decides
it and the error that refuses an order that fails it.

The order-entry statement (:func:`gridex.market.repository.order_context`) is generated from these
objects: it selects one verdict column per rule that applies and, on its PostgreSQL fast path,
inserts the order only where every verdict holds. The service reads the same verdicts and raises
the refusal of the first rule that failed, so a rule (a band that comes from a tariff, say)
changes here and nowhere else. What needs no database is checked by the service alone: the epoch
an order names (on an epoch boundary, before gate closure, within the horizon, see
:mod:`gridex.market.epochs`). Funds are the ledger's: the reservation refuses a buy that needs
more than ``available``, on every path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true

from gridex.auth.models import AuthSession, User, UserStatus
from gridex.core.clock import utc_iso
from gridex.core.errors import Conflict, GridexError
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.ledger.errors import OutstandingDebt
from gridex.market.errors import (
    ExceedsCapacity,
    GateClosed,
    NoEligibleMeter,
    PriceOutOfBounds,
    SelfTrade,
)
from gridex.market.models import RESTING, EpochState, MarketOrder, Side
from gridex.meters.models import Meter, MeterKind, MeterStatus

# Meter kinds that can deliver a side: a seller exports, a buyer imports.
_KINDS = {
    Side.sell: (MeterKind.production, MeterKind.bidirectional),
    Side.buy: (MeterKind.consumption, MeterKind.bidirectional),
}


def eligible_meter(user_id: Any, side: Side) -> ColumnElement[bool]:
    """A meter of ``user_id`` that can deliver ``side``: active, not deleted, of a kind that
    exports (sell) or imports (buy). Also what picks an order's region when it names none."""
    meters = Meter.__table__.c
    return and_(
        meters.owner_id == user_id,
        meters.status == MeterStatus.active,
        meters.deleted_at.is_(None),
        # Not IN (...): an IN list is rendered again on every execution.
        or_(*(meters.kind == kind for kind in _KINDS[side])),
    )


def gate_open(state: Any, gate_closure: Any, now: Any) -> ColumnElement[bool]:
    """An epoch takes orders, changes and cancels while it is open and before its gate closure
    (the clearing claim moves it on, so an order arriving after the claim is refused)."""
    return and_(state == EpochState.open, gate_closure > now)


def gate_open_at(gate_closure: datetime, now: datetime) -> bool:
    """:func:`gate_open` for an epoch an order names before it is read (one not stored yet
    would be open)."""
    return now < gate_closure


def gate_closed(start: datetime, gate_closure: datetime) -> GateClosed:
    return GateClosed(details={"epoch": utc_iso(start), "gate_closure": utc_iso(gate_closure)})


def client_order_id_taken() -> Conflict:
    return Conflict(
        "You already have an order with this client_order_id",
        details={"field": "client_order_id"},
    )


@dataclass(frozen=True, slots=True)
class Sources:
    """The SQL the order-entry statement offers the rules: bound parameters, the region's
    settings (outer-joined: None columns without a row) and the epoch read with it."""

    user_id: Any
    region: Any
    side: Side
    price: Any | None  # the limit; None for a market order
    now: Any
    band_min: Any  # the region's band, else the deployment's
    band_max: Any
    available: Any  # the user's ``available`` balance (NULL without an account yet)
    client_order_id: Any | None  # None when the order has none
    session_id: Any | None  # the access token's session, when the statement checks it
    epoch_state: Any
    epoch_gate_closure: Any
    epoch_id: Any  # NULL while the epoch has no row yet (its first order)
    order_id: Any  # the order itself (a modified order is not its own rival)
    quantity_wh: Any
    epoch_minutes: Any


@dataclass(frozen=True, slots=True)
class Found:
    """What the order-entry statement read: each rule's verdict by name, and the values the
    refusals report."""

    verdicts: Mapping[str, bool]
    region: str | None
    side: Side
    band_min_micros: int
    band_max_micros: int
    available_micros: int  # 0 without an account yet
    # The failed rules' figures (``Rule.reports``), by label; read only after a refusal.
    reports: Mapping[str, int] = field(default_factory=dict)

    def holds(self, rule: Rule) -> bool:
        """A rule that did not apply to this order holds."""
        return self.verdicts.get(rule.verdict, True)


@dataclass(frozen=True, slots=True)
class Rule:
    verdict: str  # the statement's column that carries it
    condition: Callable[[Sources], ColumnElement[bool]]
    applies: Callable[[Sources], bool]
    # None: not refused from the verdict alone (see SESSION and GATE).
    refusal: Callable[[Found], GridexError] | None = None
    # Values for the refusal's details, by label (read by a second statement, on refusal only).
    reports: Callable[[Sources], Mapping[str, ColumnElement[Any]]] | None = None


def _in_band(src: Sources) -> ColumnElement[bool]:
    return and_(src.band_min <= src.price, src.price <= src.band_max)


def _out_of_band(found: Found) -> GridexError:
    return PriceOutOfBounds(
        details={
            "min_price": micros_to_money(found.band_min_micros),
            "max_price": micros_to_money(found.band_max_micros),
        }
    )


def _has_meter(src: Sources) -> ColumnElement[bool]:
    meters = Meter.__table__.c
    return exists().where(eligible_meter(src.user_id, src.side), meters.region == src.region)


def _no_meter(found: Found) -> GridexError:
    return NoEligibleMeter(details={"region": found.region, "side": found.side.value})


def _no_debt(src: Sources) -> ColumnElement[bool]:
    return func.coalesce(src.available, 0) >= 0


def _in_debt(found: Found) -> GridexError:
    return OutstandingDebt(details={"available": micros_to_money(found.available_micros)})


def _client_order_id_free(src: Sources) -> ColumnElement[bool]:
    orders = MarketOrder.__table__.c
    return ~exists().where(
        orders.user_id == src.user_id, orders.client_order_id == src.client_order_id
    )


def _session_live(src: Sources) -> ColumnElement[bool]:
    sessions, users = AuthSession.__table__.c, User.__table__.c
    return exists().where(
        sessions.id == src.session_id,
        sessions.user_id == src.user_id,
        sessions.revoked_at.is_(None),
        users.id == sessions.user_id,
        users.status == UserStatus.active,
    )


def _resting_of(src: Sources, side: Side) -> list[ColumnElement[bool]]:
    """The user's other orders on ``side`` still resting in the order's epoch."""
    orders = MarketOrder.__table__.c
    return [
        orders.user_id == src.user_id,
        orders.epoch_id == src.epoch_id,
        orders.side == side,
        or_(*(orders.status == status for status in RESTING)),
        orders.id != src.order_id,
    ]


def _no_self_cross(src: Sources) -> ColumnElement[bool]:
    orders = MarketOrder.__table__.c
    buy = src.side is Side.buy
    rivals = _resting_of(src, Side.sell if buy else Side.buy)
    if src.price is not None:  # a market order crosses every opposite order
        crosses = (
            orders.effective_price_micros <= src.price
            if buy
            else (orders.effective_price_micros >= src.price)
        )
        rivals.append(crosses)
    return ~exists().where(*rivals)


def _self_cross(found: Found) -> GridexError:
    other = "sell" if found.side is Side.buy else "buy"
    return SelfTrade(
        f"This order would trade with your own open {other} order in the same epoch; "
        f"cancel that order or set a limit that does not cross it",
        details={"side": found.side.value, "crosses": other},
    )


def _export_capacity_wh(src: Sources) -> ColumnElement[Any]:
    """What the user's export meters in the region can deliver in one epoch: rated power (W)
    x the epoch's length, in Wh (rounded down)."""
    meters = Meter.__table__.c
    watts = (
        select(func.coalesce(func.sum(meters.capacity_w), 0))
        .where(eligible_meter(src.user_id, Side.sell), meters.region == src.region)
        .scalar_subquery()
    )
    capacity: ColumnElement[Any] = (watts * src.epoch_minutes) / 60
    return capacity


def _open_sells_wh(src: Sources) -> ColumnElement[Any]:
    orders = MarketOrder.__table__.c
    return (
        select(func.coalesce(func.sum(orders.quantity_wh - orders.filled_wh), 0))
        .where(*_resting_of(src, Side.sell))
        .scalar_subquery()
    )


def _within_capacity(src: Sources) -> ColumnElement[bool]:
    within: ColumnElement[bool] = _open_sells_wh(src) + src.quantity_wh <= _export_capacity_wh(src)
    return within


def _capacity_reports(src: Sources) -> Mapping[str, ColumnElement[Any]]:
    return {"capacity_wh": _export_capacity_wh(src), "open_sells_wh": _open_sells_wh(src)}


def _over_capacity(found: Found) -> GridexError:
    capacity, open_sells = found.reports["capacity_wh"], found.reports["open_sells_wh"]
    return ExceedsCapacity(
        "A sell cannot exceed what your meters in the region can export in one epoch (their "
        "rated power x the epoch's length), counting your other open sells in the epoch",
        details={
            "capacity_kwh": wh_to_kwh(capacity),
            "open_sells_kwh": wh_to_kwh(open_sells),
            "available_kwh": wh_to_kwh(max(capacity - open_sells, 0)),
        },
    )


def _stored_gate_open(src: Sources) -> ColumnElement[bool]:
    return func.coalesce(gate_open(src.epoch_state, src.epoch_gate_closure, src.now), true())


# The order's limit within the region's band [min_price, max_price] (limit orders only).
BAND = Rule("in_band", _in_band, lambda src: src.price is not None, _out_of_band)
# The user owns an active meter in the order's region that can deliver its side.
METER = Rule("has_meter", _has_meter, lambda src: True, _no_meter)
# No buy while ``available`` is negative (a settlement shortfall left a debt).
DEBT = Rule("no_debt", _no_debt, lambda src: src.side is Side.buy, _in_debt)
# ``client_order_id`` is not one of the user's orders already.
CLIENT_ORDER_ID = Rule(
    "client_order_id_free",
    _client_order_id_free,
    lambda src: src.client_order_id is not None,
    lambda found: client_order_id_taken(),
)
# No trade with oneself: an order may not cross the same user's resting opposite order in its
# epoch (a buy's limit at or above the user's own sell, a sell's at or below the user's own
# buy; a market order crosses any). In an auction two orders of one user that do not cross can
# never both be accepted, so refusing crossing ones at entry (and at a change of limit) rules out
# self-trades in both mechanisms.
SELF_TRADE = Rule("no_self_cross", _no_self_cross, lambda src: True, _self_cross)
# A sell, with the user's other open sells in the epoch, within what the user's export meters in
# the region can deliver in one epoch.
CAPACITY = Rule(
    "within_capacity",
    _within_capacity,
    lambda src: src.side is Side.sell,
    _over_capacity,
    _capacity_reports,
)
# The access token's session is live and its user active, as authentication checks them: the
# order-entry session check (see orders._place_with_session_check for what it buys). A caller
# that fails it is looked up on the general path, and authentication words the refusal (401
# INVALID_TOKEN, 403 ACCOUNT_SUSPENDED).
SESSION = Rule("session_live", _session_live, lambda src: src.session_id is not None)
# The epoch read with the order (when it exists) is open and before its gate closure; refused
# with the epoch's own gate closure (:func:`gate_closed`) by the service.
GATE = Rule("gate_open", _stored_gate_open, lambda src: True)

# Every rule of the statement; the fast path inserts where all of them hold.
ALL = (SESSION, BAND, METER, DEBT, CLIENT_ORDER_ID, SELF_TRADE, CAPACITY, GATE)


def refusal_of(rule: Rule, found: Found) -> GridexError:
    """The error of a rule that refuses from its verdict alone."""
    assert rule.refusal is not None
    return rule.refusal(found)


def first_refusal(found: Found, epoch_error: GridexError | None) -> GridexError | None:
    """The error an order is refused with, in the order the API reports them: the band, then
    the epoch it names (``epoch_error``, found by the service), then meter, debt and
    ``client_order_id``, self-trade and capacity."""
    if not found.holds(BAND):
        return refusal_of(BAND, found)
    if epoch_error is not None:
        return epoch_error
    for rule in (METER, DEBT, CLIENT_ORDER_ID, SELF_TRADE, CAPACITY):
        if not found.holds(rule):
            return refusal_of(rule, found)
    return None
