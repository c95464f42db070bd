"""Invariants of the invoice arithmetic (pure, no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from gridex.billing import rules
from gridex.billing.models import LineKind

START = datetime(2026, 3, 1, tzinfo=UTC)
BANDS = ("peak", "standard", "night")
PRICES = st.integers(min_value=0, max_value=2_000_000)

cell_energy = st.builds(
    rules.CellEnergy,
    imported=st.integers(0, 50_000),
    exported=st.integers(0, 50_000),
    bought_used=st.integers(0, 50_000),
    sold_delivered=st.integers(0, 50_000),
)


@st.composite
def months(draw: st.DrawFn) -> tuple[list[rules.PricedCell], dict[int, rules.CellEnergy]]:
    n = draw(st.integers(1, 40))
    cells = [
        rules.PricedCell(
            START + timedelta(minutes=15 * i),
            START + timedelta(minutes=15 * (i + 1)),
            date(2026, 3, 1),
            draw(st.sampled_from(BANDS)),
            draw(PRICES),
            draw(PRICES),
        )
        for i in range(n)
    ]
    energy = draw(st.dictionaries(st.integers(0, n - 1), cell_energy, max_size=n))
    return cells, energy


@given(months(), st.integers(0, 999_999))
def test_lines_sum_to_the_subtotal_and_energy_is_netted_per_cell(
    month: tuple[list[rules.PricedCell], dict[int, rules.CellEnergy]], rate: int
) -> None:
    cells, energy = month
    lines = rules.energy_lines(cells, energy, [uuid.uuid4()])
    totals = rules.totals(lines, rate)
    assert sum(line.amount_micros for line in lines) == totals.subtotal_micros
    assert totals.total_micros == totals.subtotal_micros + totals.tax_micros
    grid_in = sum(max(0, e.imported - e.bought_used) for e in energy.values())
    grid_out = sum(max(0, e.exported - e.sold_delivered) for e in energy.values())
    assert sum(ln.quantity_wh or 0 for ln in lines if ln.kind is LineKind.grid_import) == grid_in
    assert sum(ln.quantity_wh or 0 for ln in lines if ln.kind is LineKind.grid_export) == grid_out
    for line in lines:
        assert line.quantity_wh is not None
        assert line.unit_price_micros is not None
        value = rules.energy_value(line.quantity_wh, line.unit_price_micros)
        assert line.amount_micros == (value if line.kind is LineKind.grid_import else -value)
    # Comparing a month with itself gives no correction; with nothing, the lines negated.
    assert rules.difference(lines, lines) == []
    undo = rules.difference(lines, [])
    assert sum(ln.amount_micros for ln in undo) == -totals.subtotal_micros


@given(st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "UTC"]))
def test_cells_cover_the_local_month_across_clock_changes(tz_name: str) -> None:
    tz = ZoneInfo(tz_name)
    for period in ("2026-03", "2026-10", "2026-04", "2026-11"):
        start, end = rules.month_bounds(period, tz)
        span = rules.PriceSpan(start, end, "standard", 300_000, 80_000)
        cells = rules.price_cells([span], start, end, tz)
        assert cells[0].start == start
        assert cells[-1].end == end
        days = {c.day for c in cells}
        year, month = rules.parse_period(period)
        assert min(days) == date(year, month, 1)
        assert len(days) == len(cells)  # one cell per local day when the price is flat
        hours = sorted((c.end - c.start).total_seconds() / 3600 for c in cells)
        assert set(hours) <= {23.0, 23.5, 24.0, 24.5, 25.0}
