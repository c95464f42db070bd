"""Settlement arithmetic as pure functions (no clock, settings or database).

Units: energy in Wh, money in micros, prices in micros per kWh. Metered energy is carried as an
exact :class:`~fractions.Fraction` of Wh until it is rounded once, half-even, per participant.

The rules (docs/market.md, "Settlement"):

- A reading covers ``(timestamp - interval, timestamp]``. Its energy counts towards an epoch
  ``[start, end)`` in proportion to the overlap: ``energy x overlap / interval``. Meter
  intervals (15 minutes by default) can be longer than epochs (1 minute in demos), so most
  readings count only in part. A participant's metered export (import) in an epoch is the exact
  sum over its meters, rounded half-even to a Wh once.
- A seller whose metered export is below what it sold pays the shortfall at the grid import
  price; a buyer whose metered import is below what it bought is credited the excess at the
  feed-in price. Each amount is ``trade_value_micros(Wh, price)`` (half-even to a micro).
- A seller's revenue from a trade (value minus fee) is attributed to its meters pro rata to
  each meter's metered export in the epoch. The part attributed to a meter with revenue shares
  (rounded down) is split by those shares (``split_revenue``: each part rounded down, the rest
  to the platform); the rest of the revenue stays with the seller. A seller with no metered
  export keeps the whole revenue (and pays the shortfall on everything it sold).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction

from gridex.ledger.installations import split_revenue
from gridex.market.engine import trade_value_micros


@dataclass(frozen=True, slots=True)
class Interval:
    """One reading: energy over ``(end - minutes, end]``."""

    meter_id: uuid.UUID
    end: datetime
    minutes: int
    consumed_wh: int
    produced_wh: int

    @property
    def start(self) -> datetime:
        return self.end - timedelta(minutes=self.minutes)


def overlap_seconds(reading: Interval, start: datetime, end: datetime) -> Fraction:
    """Seconds of the reading's interval inside ``[start, end)`` (exact, microsecond grain)."""
    lo = max(reading.start, start)
    hi = min(reading.end, end)
    if hi <= lo:
        return Fraction(0)
    return Fraction((hi - lo) // timedelta(microseconds=1), 1_000_000)


def share_in(reading: Interval, start: datetime, end: datetime) -> Fraction:
    """The fraction of the reading's interval that lies in ``[start, end)``."""
    return overlap_seconds(reading, start, end) / (reading.minutes * 60)


@dataclass(slots=True)
class MeteredEnergy:
    """Exact metered Wh of one participant in one epoch, per meter and in total."""

    imported: Fraction = Fraction(0)
    exported: Fraction = Fraction(0)
    exported_by_meter: dict[uuid.UUID, Fraction] = field(default_factory=dict)

    @property
    def imported_wh(self) -> int:
        return round(self.imported)  # Fraction rounds half-even

    @property
    def exported_wh(self) -> int:
        return round(self.exported)


def metered_energy(
    readings: Iterable[Interval],
    owners: Mapping[uuid.UUID, uuid.UUID],
    start: datetime,
    end: datetime,
) -> dict[uuid.UUID, MeteredEnergy]:
    """Per owner (``owners``: meter -> user), the energy its meters imported and exported in
    ``[start, end)``, each reading pro-rated by its overlap with the epoch."""
    out: dict[uuid.UUID, MeteredEnergy] = {}
    for reading in readings:
        part = share_in(reading, start, end)
        if not part:
            continue
        energy = out.setdefault(owners[reading.meter_id], MeteredEnergy())
        energy.imported += reading.consumed_wh * part
        exported = reading.produced_wh * part
        energy.exported += exported
        if exported:
            by_meter = energy.exported_by_meter
            by_meter[reading.meter_id] = by_meter.get(reading.meter_id, Fraction(0)) + exported
    return out


def covered(readings: Iterable[Interval], start: datetime, end: datetime) -> bool:
    """Whether the readings (of one meter, not overlapping each other) cover ``[start, end)``."""
    total = sum((overlap_seconds(r, start, end) for r in readings), Fraction(0))
    return total >= Fraction((end - start) // timedelta(microseconds=1), 1_000_000)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The delivery check of one participant: Wh short (seller) or unconsumed (buyer) and what
    they cost or earn."""

    shortfall_wh: int
    excess_wh: int
    charge_micros: int
    credit_micros: int


def delivery_check(
    *,
    sold_wh: int,
    bought_wh: int,
    exported_wh: int,
    imported_wh: int,
    import_price_micros: int,
    feed_in_price_micros: int,
) -> Delivery:
    """Shortfall of a seller at the grid import price; excess of a buyer at the feed-in price.
    Selling and buying are checked independently (a participant may do both in one epoch)."""
    shortfall = max(0, sold_wh - exported_wh)
    excess = max(0, bought_wh - imported_wh)
    return Delivery(
        shortfall,
        excess,
        trade_value_micros(shortfall, import_price_micros),
        trade_value_micros(excess, feed_in_price_micros),
    )


Shares = tuple[Sequence[tuple[uuid.UUID, int]], int]  # ([(user, bp)], platform_bp)


@dataclass(frozen=True, slots=True)
class Payout:
    """Where one trade's escrowed value goes. ``fee_micros + platform_share_micros`` go to
    ``fees``; ``seller_micros`` to the seller; ``holders`` to installation share holders (the
    seller may be one of them). The parts sum to the trade's value."""

    fee_micros: int
    seller_micros: int
    holders: dict[uuid.UUID, int]
    platform_share_micros: int

    @property
    def shared_micros(self) -> int:
        """The part of the seller's revenue passed on through revenue shares."""
        return sum(self.holders.values()) + self.platform_share_micros


def attribute(
    net_micros: int, exported_by_meter: Mapping[uuid.UUID, Fraction]
) -> dict[uuid.UUID, int]:
    """Revenue per meter, pro rata to its metered export, each rounded down (the remainder is
    not attributed to any meter and stays with the seller)."""
    total = sum(exported_by_meter.values(), Fraction(0))
    if total <= 0 or net_micros <= 0:
        return {}
    return {
        meter: int(net_micros * exported / total)  # floor: both are non-negative
        for meter, exported in sorted(exported_by_meter.items())
        if exported > 0
    }


def plan_payout(
    *,
    value_micros: int,
    fee_micros: int,
    exported_by_meter: Mapping[uuid.UUID, Fraction],
    shares: Mapping[uuid.UUID, Shares],
) -> Payout:
    """Split one trade's value into fee, revenue shares of the seller's shared meters and the
    seller's own part (``shares``: the installations of the seller's meters that have one)."""
    net = value_micros - fee_micros
    holders: dict[uuid.UUID, int] = {}
    platform = 0
    passed_on = 0
    for meter, amount in attribute(net, exported_by_meter).items():
        installation = shares.get(meter)
        if installation is None or amount <= 0:
            continue
        split = split_revenue(amount, installation[0], installation[1])
        for user, part in split.users.items():
            holders[user] = holders.get(user, 0) + part
        platform += split.platform_micros
        passed_on += amount
    return Payout(fee_micros, net - passed_on, holders, platform)
