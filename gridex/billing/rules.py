"""The invoice arithmetic, pure: from a month's energy, trades and settlement entries to lines,
tax and total. Plain values in, plain values out; the service gathers the inputs in bulk.

Energy is netted per cell: a cell is a stretch of the month with one tariff price and one local
day (the tariff's price segments cut at local midnights). Per cell, the energy bought locally
and really consumed (per settled epoch, the lesser of bought and metered import) is not grid
import, and the energy sold locally and really delivered is not grid export:

    grid import (cell) = max(0, metered import - locally bought and consumed)
    grid export (cell) = max(0, metered export - locally sold and delivered)

Cells of the same band and import price make one import line; cells of the same feed-in price
one export line. Every amount is ``Wh x price / 1000`` rounded half-even once per line, tax is
``subtotal x rate`` rounded half-even, so a member can recompute each figure from the line.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from gridex.billing.models import SETTLED_KINDS, LineKind
from gridex.core.clock import utc_iso
from gridex.core.units import micros_to_money, round_half_even

PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class PricedCell:
    """``[start, end)`` in UTC with one set of prices (micros per kWh), on local ``day``."""

    start: datetime
    end: datetime
    day: date
    band: str
    import_price_micros: int
    feed_in_price_micros: int


@dataclass(slots=True)
class CellEnergy:
    """One user's energy in one cell, Wh: metered import and export, and the part of each that
    local trades covered (bought and consumed, sold and delivered)."""

    imported: int = 0
    exported: int = 0
    bought_used: int = 0
    sold_delivered: int = 0


@dataclass(frozen=True, slots=True)
class TradeRow:
    id: uuid.UUID
    buyer_id: uuid.UUID
    seller_id: uuid.UUID
    quantity_wh: int
    value_micros: int
    fee_micros: int


@dataclass(frozen=True, slots=True)
class EntryRow:
    """A settlement entry's posting on a user's wallet: ``amount`` as the wallet saw it
    (negative: the user paid)."""

    id: uuid.UUID
    user_id: uuid.UUID
    type: str
    amount_micros: int


@dataclass(slots=True)
class Line:
    kind: LineKind
    description: str
    amount_micros: int
    band: str | None = None
    quantity_wh: int | None = None
    unit_price_micros: int | None = None
    trace: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Totals:
    subtotal_micros: int
    tax_micros: int
    total_micros: int
    settled_micros: int


def energy_value(wh: int, price_micros_per_kwh: int) -> int:
    """Micros of ``wh`` at a price per kWh, rounded half-even (the market's rule)."""
    return round_half_even(wh * price_micros_per_kwh, 1000)


def tax_rate_ppm(rate: Decimal) -> int:
    """A rate such as ``0.2`` in parts per million (exact: at most 6 decimals)."""
    ppm = rate * PPM
    if ppm != ppm.to_integral_value() or ppm < 0 or ppm >= PPM:
        raise ValueError(f"tax rate {rate} must be in [0, 1) with at most 6 decimals")
    return int(ppm)


def tax_of(subtotal_micros: int, rate_ppm: int) -> int:
    return round_half_even(subtotal_micros * rate_ppm, PPM)


def _windows(cells: Iterable[PricedCell]) -> list[list[str]]:
    """The cells' UTC windows, adjacent ones merged: with the meter ids, the query that returns
    the readings behind a line."""
    merged: list[list[datetime]] = []
    for cell in sorted(cells, key=lambda c: c.start):
        if merged and merged[-1][1] == cell.start:
            merged[-1][1] = cell.end
        else:
            merged.append([cell.start, cell.end])
    return [[utc_iso(a), utc_iso(b)] for a, b in merged]


def _price(micros: int) -> str:
    return micros_to_money(micros)


def energy_lines(
    cells: Sequence[PricedCell],
    energy: Mapping[int, CellEnergy],
    meter_ids: Sequence[uuid.UUID],
) -> list[Line]:
    """Grid import lines (per band and price) and grid export lines (per feed-in price)."""
    imports: dict[tuple[str, int], list[int]] = defaultdict(list)
    exports: dict[int, list[int]] = defaultdict(list)
    for index, e in energy.items():
        cell = cells[index]
        grid_in = max(0, e.imported - e.bought_used)
        grid_out = max(0, e.exported - e.sold_delivered)
        if grid_in:
            imports[(cell.band, cell.import_price_micros)].append(index)
        if grid_out:
            exports[cell.feed_in_price_micros].append(index)
    meters = [str(m) for m in sorted(meter_ids)]
    lines: list[Line] = []
    for (band, price), indexes in sorted(imports.items()):
        wh = sum(max(0, energy[i].imported - energy[i].bought_used) for i in indexes)
        lines.append(
            Line(
                LineKind.grid_import,
                f"Grid import, {band.replace('_', ' ')} band",
                energy_value(wh, price),
                band=band,
                quantity_wh=wh,
                unit_price_micros=price,
                trace={"meters": meters, "windows": _windows(cells[i] for i in indexes)},
            )
        )
    for price, indexes in sorted(exports.items()):
        wh = sum(max(0, energy[i].exported - energy[i].sold_delivered) for i in indexes)
        lines.append(
            Line(
                LineKind.grid_export,
                "Grid export credit at the feed-in price",
                -energy_value(wh, price),
                quantity_wh=wh,
                unit_price_micros=price,
                trace={"meters": meters, "windows": _windows(cells[i] for i in indexes)},
            )
        )
    return lines


def _average_price(value_micros: int, wh: int) -> int:
    return round_half_even(value_micros * 1000, wh) if wh else 0


def trade_lines(user_id: uuid.UUID, trades: Sequence[TradeRow]) -> list[Line]:
    """Local purchases (charges), local sales (credits, gross) and the platform fee on sales."""
    bought = [t for t in trades if t.buyer_id == user_id]
    sold = [t for t in trades if t.seller_id == user_id]
    lines: list[Line] = []
    if bought:
        wh = sum(t.quantity_wh for t in bought)
        value = sum(t.value_micros for t in bought)
        lines.append(
            Line(
                LineKind.p2p_purchase,
                f"Local energy bought from neighbours ({len(bought)} trades)",
                value,
                quantity_wh=wh,
                unit_price_micros=_average_price(value, wh),
                trace={"trades": [str(t.id) for t in bought]},
            )
        )
    if sold:
        wh = sum(t.quantity_wh for t in sold)
        value = sum(t.value_micros for t in sold)
        ids = [str(t.id) for t in sold]
        lines.append(
            Line(
                LineKind.p2p_sale,
                f"Local energy sold to neighbours ({len(sold)} trades)",
                -value,
                quantity_wh=wh,
                unit_price_micros=_average_price(value, wh),
                trace={"trades": ids},
            )
        )
        fees = sum(t.fee_micros for t in sold)
        if fees:
            lines.append(
                Line(LineKind.fee, "Platform fee on local sales", fees, trace={"trades": ids})
            )
    return lines


_ENTRY_LINES = (
    ("settlement_charge", LineKind.shortfall, "Delivery shortfall charged at the grid price"),
    ("settlement_credit", LineKind.feed_in_credit, "Unconsumed local energy credited at feed-in"),
    ("adjustment", LineKind.adjustment, "Re-settlement after corrected meter readings"),
)


def entry_lines(entries: Sequence[EntryRow]) -> list[Line]:
    """Shortfall charges, feed-in credits and re-settlement adjustments as the wallet saw them
    (a payment out of the wallet is a charge on the invoice)."""
    lines: list[Line] = []
    for type, kind, description in _ENTRY_LINES:
        mine = [e for e in entries if e.type == type]
        if mine:
            amount = -sum(e.amount_micros for e in mine)
            if amount or kind is LineKind.adjustment:
                lines.append(
                    Line(kind, description, amount, trace={"entries": [str(e.id) for e in mine]})
                )
    return lines


def corrected_kind(line: Line) -> LineKind:
    """The kind a line counts as: a correction line counts as the kind it corrects."""
    corrects = line.trace.get("corrects")
    return LineKind(corrects) if isinstance(corrects, str) else line.kind


def totals(lines: Sequence[Line], rate_ppm: int) -> Totals:
    subtotal = sum(line.amount_micros for line in lines)
    tax = tax_of(subtotal, rate_ppm)
    settled = sum(line.amount_micros for line in lines if corrected_kind(line) in SETTLED_KINDS)
    return Totals(subtotal, tax, subtotal + tax, settled)


def difference(old: Sequence[Line], new: Sequence[Line]) -> list[Line]:
    """The correction lines from what was invoiced (``old``, the invoice with its earlier
    corrections) to what the month comes to now (``new``): per kind and band, new - old."""

    def key(line: Line) -> tuple[str, str | None, int | None]:
        return (corrected_kind(line).value, line.band, line.unit_price_micros)

    before: dict[tuple[str, str | None, int | None], int] = defaultdict(int)
    after: dict[tuple[str, str | None, int | None], int] = defaultdict(int)
    for line in old:
        before[key(line)] += line.amount_micros
    for line in new:
        after[key(line)] += line.amount_micros
    out: list[Line] = []
    described = {key(line): line for line in [*old, *new]}
    for k in sorted(set(before) | set(after), key=lambda k: (k[0], k[1] or "", k[2] or 0)):
        delta = after[k] - before[k]
        if delta:
            source = described[k]
            out.append(
                Line(
                    LineKind.adjustment,
                    f"Correction: {source.description.removeprefix('Correction: ')}",
                    delta,
                    band=source.band,
                    unit_price_micros=source.unit_price_micros,
                    trace={**source.trace, "corrects": k[0]},
                )
            )
    return out


# --- the month and its cells ---------------------------------------------------------------


def month_bounds(period: str, tz: tzinfo) -> tuple[datetime, datetime]:
    """``[first local midnight of the month, first of the next)`` in UTC for ``yyyy-mm``."""
    year, month = parse_period(period)
    first = datetime(year, month, 1, tzinfo=tz)
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    return first.astimezone(UTC), following.astimezone(UTC)


def parse_period(period: str) -> tuple[int, int]:
    """``yyyy-mm`` to (year, month); ValueError for anything else."""
    if len(period) != 7 or period[4] != "-" or not (period[:4] + period[5:]).isdigit():
        raise ValueError(f"{period!r} is not a month yyyy-mm")
    year, month = int(period[:4]), int(period[5:])
    if not (2000 <= year <= 9999 and 1 <= month <= 12):
        raise ValueError(f"{period!r} is not a month yyyy-mm")
    return year, month


def period_of(at: datetime, tz: tzinfo) -> str:
    local = at.astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"


def local_midnights(start: datetime, end: datetime, tz: tzinfo) -> list[datetime]:
    """The UTC instants of the local midnights in ``[start, end)`` (``start`` a midnight)."""
    out: list[datetime] = []
    day = start.astimezone(tz).date()
    while True:
        at = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
        if at >= end:
            return out
        if at >= start:
            out.append(at)
        day += timedelta(days=1)


@dataclass(frozen=True, slots=True)
class PriceSpan:
    """What billing needs of a tariff price segment: ``[start, end)`` with its prices."""

    start: datetime
    end: datetime
    band: str
    import_price_micros: int
    feed_in_price_micros: int


def price_cells(
    segments: Sequence[PriceSpan], start: datetime, end: datetime, tz: tzinfo
) -> list[PricedCell]:
    """The tariff's segments over ``[start, end)`` cut at local midnights."""
    cuts = local_midnights(start, end, tz)
    cells: list[PricedCell] = []
    for segment in segments:
        a, b = max(segment.start, start), min(segment.end, end)
        if a >= b:
            continue
        points = [a, *(c for c in cuts if a < c < b), b]
        for s, e in itertools.pairwise(points):
            cells.append(
                PricedCell(
                    s,
                    e,
                    s.astimezone(tz).date(),
                    segment.band,
                    segment.import_price_micros,
                    segment.feed_in_price_micros,
                )
            )
    cells.sort(key=lambda c: c.start)
    if not cells or cells[0].start != start or cells[-1].end != end:
        raise ValueError("the price segments do not cover the month")
    for before, after in itertools.pairwise(cells):
        if before.end != after.start:
            raise ValueError("the price segments are not contiguous")
    return cells


def daily_energy(
    cells: Sequence[PricedCell], energy: Mapping[int, CellEnergy], days: Sequence[date]
) -> list[list[Any]]:
    """Per local day of the month: [``yyyy-mm-dd``, metered import Wh, metered export Wh]."""
    per_day: dict[date, list[int]] = {day: [0, 0] for day in days}
    for index, e in energy.items():
        totals_of_day = per_day.setdefault(cells[index].day, [0, 0])
        totals_of_day[0] += e.imported
        totals_of_day[1] += e.exported
    return [[day.isoformat(), a, b] for day, (a, b) in sorted(per_day.items())]
