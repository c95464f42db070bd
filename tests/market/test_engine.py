"""The uniform-price double auction and the money helpers of ``gridex.market.engine``."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridex.market.engine import (
    ClearingResult,
    Order,
    Side,
    Trade,
    aggregate_levels,
    clear_auction,
    clear_auction_arrays,
    fee_micros,
    trade_value_micros,
    trades_hash,
)


def bid(order_id: str, quantity_wh: int, price_micros: int, seq: int) -> Order:
    return Order(order_id, Side.BUY, quantity_wh, price_micros, seq)


def ask(order_id: str, quantity_wh: int, price_micros: int, seq: int) -> Order:
    return Order(order_id, Side.SELL, quantity_wh, price_micros, seq)


def trade_tuples(result: ClearingResult) -> list[tuple[str, str, int, int]]:
    return [(t.buy_order_id, t.sell_order_id, t.quantity_wh, t.price_micros) for t in result.trades]


# The worked example of docs/market.md.
DOC_BIDS = [
    bid("b1", 3000, 200_000, 3),
    bid("b2", 1000, 180_000, 4),
    bid("b3", 1000, 180_000, 1),
    bid("b4", 2000, 175_000, 5),
    bid("b5", 1000, 140_000, 2),
]
DOC_ASKS = [
    ask("a1", 2000, 120_000, 6),
    ask("a2", 3000, 150_000, 7),
    ask("a3", 2000, 170_000, 8),
    ask("a4", 1000, 190_000, 9),
]


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_worked_example_from_the_docs() -> None:
    result = clear_auction(DOC_BIDS, DOC_ASKS)

    # Crossing ends at 7,000 Wh: lo = max(170k, 140k), hi = min(175k, 190k), midpoint 172.5k.
    assert result.price_micros == 172_500
    assert result.volume_wh == 7000
    assert (result.buy_orders, result.sell_orders, result.trade_count) == (5, 4, 5)
    assert result.fills == {
        "b1": 3000,
        "b2": 1000,
        "b3": 1000,
        "b4": 2000,
        "b5": 0,
        "a1": 2000,
        "a2": 3000,
        "a3": 2000,
        "a4": 0,
    }
    # b3 precedes b2: same price, earlier seq.
    assert trade_tuples(result) == [
        ("b1", "a1", 2000, 172_500),
        ("b1", "a2", 1000, 172_500),
        ("b3", "a2", 1000, 172_500),
        ("b2", "a2", 1000, 172_500),
        ("b4", "a3", 2000, 172_500),
    ]
    assert [t.value_micros for t in result.trades] == [345_000, 172_500, 172_500, 172_500, 345_000]
    assert sum(t.value_micros for t in result.trades) == 1_207_500
    assert fee_micros(345_000, 100) == 3450


def test_worked_example_variant_partial_ask_pins_the_price() -> None:
    asks = [*DOC_ASKS[:2], ask("a3", 2500, 170_000, 8), DOC_ASKS[3]]

    result = clear_auction(DOC_BIDS, asks)

    # a3's unfilled 500 Wh is a rejected ask at 170k, so hi = min(175k, 170k) = lo.
    assert result.volume_wh == 7000
    assert result.price_micros == 170_000
    assert result.fills["a3"] == 2000
    assert trade_tuples(result)[-1] == ("b4", "a3", 2000, 170_000)


def test_vertical_overlap_rounds_the_midpoint_half_even() -> None:
    bids = [bid("b1", 10, 100, 1), bid("b2", 5, 80, 2)]
    asks = [ask("a1", 10, 90, 3), ask("a2", 5, 95, 4)]

    result = clear_auction(bids, asks)

    # Both curves step at 10 Wh; lo = max(90, 80) = 90, hi = min(100, 95) = 95 -> 92.5 -> 92.
    assert (result.price_micros, result.volume_wh) == (92, 10)
    assert trade_tuples(result) == [("b1", "a1", 10, 92)]
    assert result.fills == {"b1": 10, "b2": 0, "a1": 10, "a2": 0}


def test_midpoint_rounds_half_up_to_the_even_neighbour() -> None:
    result = clear_auction([bid("b", 1, 96, 1)], [ask("a", 1, 93, 2)])

    assert result.price_micros == 94  # 94.5 -> 94 (even)
    result = clear_auction([bid("b", 1, 98, 1)], [ask("a", 1, 93, 2)])
    assert result.price_micros == 96  # 95.5 -> 96 (even)


def test_horizontal_overlap_fills_the_marginal_bid_partly() -> None:
    bids = [bid("b1", 5, 60, 1), bid("b2", 10, 50, 2)]
    asks = [ask("a1", 3, 40, 3), ask("a2", 10, 50, 4)]

    result = clear_auction(bids, asks)

    # Curves run level at 50 from 5 to 13 Wh; all supply clears, b2's rest (2 Wh) is rejected.
    assert (result.price_micros, result.volume_wh) == (50, 13)
    assert result.fills == {"b1": 5, "b2": 8, "a1": 3, "a2": 10}
    assert trade_tuples(result) == [("b1", "a1", 3, 50), ("b1", "a2", 2, 50), ("b2", "a2", 8, 50)]


def test_horizontal_overlap_with_no_partial_fill() -> None:
    bids = [bid("b1", 10, 50, 1), bid("b2", 5, 30, 2)]
    asks = [ask("a1", 4, 50, 3), ask("a2", 6, 50, 4), ask("a3", 5, 70, 5)]

    result = clear_auction(bids, asks)

    assert (result.price_micros, result.volume_wh) == (50, 10)
    assert trade_tuples(result) == [("b1", "a1", 4, 50), ("b1", "a2", 6, 50)]


def test_ties_at_the_marginal_price_go_by_seq_on_both_sides() -> None:
    bids = [bid("b1", 5, 50, 2), bid("b2", 5, 50, 1)]
    asks = [ask("a1", 3, 50, 4), ask("a2", 3, 50, 3)]

    result = clear_auction(bids, asks)

    assert (result.price_micros, result.volume_wh) == (50, 6)
    assert result.fills == {"b1": 1, "b2": 5, "a1": 3, "a2": 3}
    assert trade_tuples(result) == [("b2", "a2", 3, 50), ("b2", "a1", 2, 50), ("b1", "a1", 1, 50)]


def test_equal_seq_is_broken_by_id() -> None:
    bids = [bid("x", 5, 50, 7), bid("a", 5, 50, 7)]
    asks = [ask("s", 6, 40, 1)]

    result = clear_auction(bids, asks)

    assert result.fills == {"a": 5, "x": 1, "s": 6}
    assert trade_tuples(result) == [("a", "s", 5, 50), ("x", "s", 1, 50)]


def test_one_side_empty() -> None:
    result = clear_auction([bid("b1", 5, 50, 1), bid("b2", 5, 60, 2)], [])

    assert result.price_micros is None
    assert result.volume_wh == 0
    assert (result.buy_orders, result.sell_orders) == (2, 0)
    assert result.trades == ()
    assert result.fills == {"b1": 0, "b2": 0}


def test_both_sides_empty() -> None:
    result = clear_auction([], [])

    assert (result.price_micros, result.volume_wh, result.trade_count) == (None, 0, 0)
    assert result.fills == {}


def test_no_cross() -> None:
    result = clear_auction([bid("b", 5, 40, 1)], [ask("a", 5, 50, 2)])

    assert (result.price_micros, result.volume_wh) == (None, 0)
    assert result.trades == ()
    assert result.fills == {"b": 0, "a": 0}


def test_exact_equality_of_bid_and_ask_prices_trades_at_that_price() -> None:
    result = clear_auction([bid("b", 5, 70, 1)], [ask("a", 5, 70, 2)])

    assert (result.price_micros, result.volume_wh) == (70, 5)
    assert trade_tuples(result) == [("b", "a", 5, 70)]


BAND_MIN, BAND_MAX = 10_000, 1_000_000


def test_only_market_orders_more_demand_settles_at_band_max() -> None:
    bids = [bid("b1", 4, BAND_MAX, 1), bid("b2", 4, BAND_MAX, 2)]
    asks = [ask("a1", 5, BAND_MIN, 3), ask("a2", 1, BAND_MIN, 4)]

    result = clear_auction(bids, asks)

    # b2's unfilled 2 Wh is a rejected bid at the band max, so lo = hi = band max.
    assert (result.price_micros, result.volume_wh) == (BAND_MAX, 6)
    assert result.fills == {"b1": 4, "b2": 2, "a1": 5, "a2": 1}


def test_only_market_orders_balanced_settles_mid_band() -> None:
    bids = [bid("b1", 3, BAND_MAX, 1), bid("b2", 3, BAND_MAX, 2)]
    asks = [ask("a1", 6, BAND_MIN, 3)]

    result = clear_auction(bids, asks)

    assert (result.price_micros, result.volume_wh) == (505_000, 6)
    assert trade_tuples(result) == [("b1", "a1", 3, 505_000), ("b2", "a1", 3, 505_000)]


def test_one_huge_bid_against_many_small_asks() -> None:
    asks = [ask(f"a{i:03d}", 10, i, i) for i in range(1, 101)]

    result = clear_auction([bid("whale", 1_000_000, 100, 0)], asks)

    assert result.volume_wh == 1000
    assert result.price_micros == 100  # the whale's unfilled rest is the first rejected bid
    assert result.fills["whale"] == 1000
    assert all(result.fills[a.id] == 10 for a in asks)
    assert trade_tuples(result) == [("whale", a.id, 10, 100) for a in asks]


def test_one_huge_ask_against_many_small_bids() -> None:
    bids = [bid(f"b{i:03d}", 10, i, i) for i in range(1, 101)]

    result = clear_auction(bids, [ask("whale", 1_000_000, 1, 0)])

    assert (result.volume_wh, result.price_micros) == (1000, 1)
    assert [t.buy_order_id for t in result.trades] == [f"b{i:03d}" for i in range(100, 0, -1)]


def test_partial_fill_falls_on_the_later_order_at_the_marginal_price() -> None:
    bids = [bid("early", 4, 50, 1), bid("late", 4, 50, 2)]
    asks = [ask("a", 6, 45, 3)]

    result = clear_auction(list(reversed(bids)), asks)

    assert result.fills == {"early": 4, "late": 2, "a": 6}
    assert result.price_micros == 50


def test_clear_auction_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="buy"):
        clear_auction([ask("a", 1, 1, 1)], [])
    with pytest.raises(ValueError, match="sell"):
        clear_auction([], [bid("b", 1, 1, 1)])
    with pytest.raises(ValueError, match="unique"):
        clear_auction([bid("x", 1, 1, 1)], [ask("x", 1, 1, 2)])


@pytest.mark.parametrize(
    ("quantity", "price", "seq"),
    [(0, 1, 1), (-5, 1, 1), (True, 1, 1), (1.0, 1, 1), (1, 1.5, 1), (1, 1, "1")],
)
def test_order_refuses_non_integer_or_non_positive_values(
    quantity: object, price: object, seq: object
) -> None:
    with pytest.raises(ValueError, match="order 'o'"):
        Order("o", Side.BUY, quantity, price, seq)  # type: ignore[arg-type]


def test_order_refuses_a_plain_string_side() -> None:
    with pytest.raises(ValueError, match="side"):
        Order("o", "buy", 1, 1, 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Array API
# ---------------------------------------------------------------------------------------------


def test_array_api_reports_input_indices() -> None:
    result = clear_auction_arrays(
        bid_price=[140_000, 200_000, 180_000, 175_000, 180_000],
        bid_quantity=[1000, 3000, 1000, 2000, 1000],
        bid_seq=[2, 3, 4, 5, 1],
        ask_price=np.array([190_000, 170_000, 150_000, 120_000]),
        ask_quantity=np.array([1000, 2000, 3000, 2000]),
        ask_seq=np.array([9, 8, 7, 6]),
    )

    assert (result.price_micros, result.volume_wh) == (172_500, 7000)
    assert result.bid_filled.tolist() == [0, 3000, 1000, 2000, 1000]
    assert result.ask_filled.tolist() == [0, 2000, 3000, 2000]
    assert result.trade_bid.tolist() == [1, 1, 4, 2, 3]
    assert result.trade_ask.tolist() == [3, 2, 2, 2, 1]
    assert result.trade_quantity.tolist() == [2000, 1000, 1000, 1000, 2000]


def test_array_api_breaks_equal_seq_by_input_position_without_ids() -> None:
    result = clear_auction_arrays(
        bid_price=[50, 50, 50],
        bid_quantity=[2, 2, 2],
        bid_seq=[1, 1, 1],
        ask_price=[10],
        ask_quantity=[3],
        ask_seq=[0],
    )

    assert result.bid_filled.tolist() == [2, 1, 0]
    assert result.trade_bid.tolist() == [0, 1]


def test_array_api_handles_keys_too_wide_to_pack() -> None:
    # Prices near +-2**62 and sparse seqs cannot be packed into one int64: the lexsort path runs.
    big = 2**62
    result = clear_auction_arrays(
        bid_price=[big, -big, big],
        bid_quantity=[1, 1, 1],
        bid_seq=[2**40, 0, 5],
        ask_price=[-big, big],
        ask_quantity=[1, 5],
        ask_seq=[1, 2**50],
    )

    assert result.volume_wh == 2
    assert result.bid_filled.tolist() == [1, 0, 1]
    assert result.ask_filled.tolist() == [1, 1]
    assert result.trade_bid.tolist() == [2, 0]
    assert result.trade_ask.tolist() == [0, 1]
    # lo = max(last accepted ask = big, first rejected bid = -big), hi = min(big, rest at big).
    assert result.price_micros == big


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bid_quantity": [0]}, "quantities"),
        ({"bid_price": [1.5]}, "integers"),
        ({"bid_seq": [1, 2]}, "same length"),
        ({"ask_price": [2**63 - 1]}, "2\\*\\*62"),
        ({"ask_quantity": [2**61 + 1]}, "2\\*\\*61"),
        ({"bid_price": [[1]]}, "one-dimensional"),
        ({"ask_price": [], "ask_quantity": [], "ask_seq": [], "bid_quantity": [-1]}, "quantities"),
    ],
)
def test_array_api_rejects_bad_input(overrides: dict[str, object], message: str) -> None:
    columns: dict[str, object] = {
        "bid_price": [5],
        "bid_quantity": [1],
        "bid_seq": [1],
        "ask_price": [4],
        "ask_quantity": [1],
        "ask_seq": [2],
    }
    columns.update(overrides)
    with pytest.raises(ValueError, match=message):
        clear_auction_arrays(**columns)  # type: ignore[arg-type]


def test_trades_and_fills_are_cached_and_stable() -> None:
    result = clear_auction(DOC_BIDS, DOC_ASKS)

    assert result.trades is result.trades
    assert result.fills is result.fills


# ---------------------------------------------------------------------------------------------
# Money helpers and the trades hash
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wh", "price", "expected"),
    [
        (1000, 172_500, 172_500),
        (2000, 172_500, 345_000),
        (1, 500, 0),  # 0.5 -> 0
        (3, 500, 2),  # 1.5 -> 2
        (5, 500, 2),  # 2.5 -> 2
        (1, 1500, 2),  # 1.5 -> 2
        (7, 1_000_000, 7000),
        (1, 499, 0),
        (1, 501, 1),
        (1, -500, 0),  # -0.5 -> 0
        (3, -500, -2),  # -1.5 -> -2
        (10**12, 999_999, 999_999_000_000_000),
    ],
)
def test_trade_value_micros_rounds_half_even(wh: int, price: int, expected: int) -> None:
    assert trade_value_micros(wh, price) == expected


@pytest.mark.parametrize(
    ("value", "bps", "expected"),
    [
        (345_000, 100, 3450),
        (50, 100, 0),  # 0.5 -> 0
        (150, 100, 2),  # 1.5 -> 2
        (250, 100, 2),  # 2.5 -> 2
        (1_207_500, 100, 12_075),
        (1_234_567, 25, 3086),  # 3086.4175
        (99, 0, 0),
        (10_000, 10_000, 10_000),
    ],
)
def test_fee_micros_rounds_half_even(value: int, bps: int, expected: int) -> None:
    assert fee_micros(value, bps) == expected


def test_fee_micros_refuses_negative_bps() -> None:
    with pytest.raises(ValueError, match="fee_bps"):
        fee_micros(100, -1)


def test_trades_hash_matches_the_documented_canonical_form() -> None:
    trades = clear_auction(DOC_BIDS, DOC_ASKS).trades
    canonical = (
        '{"epoch":"2025-06-01T12:15:00Z","trades":['
        '{"buy_order_id":"b1","price_micros":172500,"quantity_wh":2000,"sell_order_id":"a1"},'
        '{"buy_order_id":"b1","price_micros":172500,"quantity_wh":1000,"sell_order_id":"a2"},'
        '{"buy_order_id":"b3","price_micros":172500,"quantity_wh":1000,"sell_order_id":"a2"},'
        '{"buy_order_id":"b2","price_micros":172500,"quantity_wh":1000,"sell_order_id":"a2"},'
        '{"buy_order_id":"b4","price_micros":172500,"quantity_wh":2000,"sell_order_id":"a3"}]}'
    )

    digest = trades_hash(trades, "2025-06-01T12:15:00Z")

    assert digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert digest == "19e3a137ea681b0aef3a7e8c0400de05343be6e887f0cf77a9cf5bc316a2a7aa"


def test_trades_hash_of_an_epoch_without_trades_depends_on_the_epoch() -> None:
    a = trades_hash([], "2025-06-01T12:15:00Z")
    b = trades_hash([], "2025-06-01T12:30:00Z")

    assert a == hashlib.sha256(b'{"epoch":"2025-06-01T12:15:00Z","trades":[]}').hexdigest()
    assert a != b


def test_trades_hash_encodes_non_ascii_ids_as_utf8() -> None:
    trades = [Trade("kauf-ä", "verkauf", 1, 2)]
    # Raw UTF-8, not \u escapes: the form is what json.dumps(..., ensure_ascii=False) writes.
    canonical = (
        '{"epoch":"2025-06-01T00:00:00Z","trades":[{"buy_order_id":"kauf-ä",'
        '"price_micros":2,"quantity_wh":1,"sell_order_id":"verkauf"}]}'
    )
    assert trades_hash(trades, "2025-06-01T00:00:00Z") == (
        hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    )


@pytest.mark.parametrize(
    "epoch", ["2025-06-01T12:15:00+00:00", "2025-06-01 12:15:00Z", "2025-06-01T12:15Z", ""]
)
def test_trades_hash_refuses_a_non_canonical_epoch(epoch: str) -> None:
    with pytest.raises(ValueError, match="epoch_start_iso"):
        trades_hash([], epoch)


def test_aggregate_levels_orders_best_first() -> None:
    depth = aggregate_levels([*DOC_BIDS, *DOC_ASKS, bid("b6", 500, 200_000, 10)])

    assert [(lv.price_micros, lv.quantity_wh, lv.orders) for lv in depth.bids] == [
        (200_000, 3500, 2),
        (180_000, 2000, 2),
        (175_000, 2000, 1),
        (140_000, 1000, 1),
    ]
    assert [(lv.price_micros, lv.quantity_wh, lv.orders) for lv in depth.asks] == [
        (120_000, 2000, 1),
        (150_000, 3000, 1),
        (170_000, 2000, 1),
        (190_000, 1000, 1),
    ]


# ---------------------------------------------------------------------------------------------
# Reference models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    price: int | None
    volume: int
    fills: dict[str, int]
    trades: list[tuple[str, str, int, int]]


def unit_reference(bids: list[Order], asks: list[Order]) -> Reference:
    """Brute force on the rule's own terms: every Wh is a unit on its curve."""
    ranked_bids = sorted(bids, key=lambda o: (-o.price_micros, o.seq, o.id))
    ranked_asks = sorted(asks, key=lambda o: (o.price_micros, o.seq, o.id))
    bid_units = [o for o in ranked_bids for _ in range(o.quantity_wh)]
    ask_units = [o for o in ranked_asks for _ in range(o.quantity_wh)]
    # The largest volume whose marginal bid is priced >= its marginal ask: try every volume.
    volume = max(
        (
            v
            for v in range(1, min(len(bid_units), len(ask_units)) + 1)
            if bid_units[v - 1].price_micros >= ask_units[v - 1].price_micros
        ),
        default=0,
    )
    fills = {o.id: 0 for o in [*bids, *asks]}
    fills.update(Counter(o.id for o in bid_units[:volume]))
    fills.update(Counter(o.id for o in ask_units[:volume]))
    if volume == 0:
        return Reference(None, 0, fills, [])
    lo = ask_units[volume - 1].price_micros
    if volume < len(bid_units):
        lo = max(lo, bid_units[volume].price_micros)
    hi = bid_units[volume - 1].price_micros
    if volume < len(ask_units):
        hi = min(hi, ask_units[volume].price_micros)
    price = round(Fraction(lo + hi, 2))  # Python rounds a Fraction half to even
    trades: list[tuple[str, str, int, int]] = []
    for b, a in zip(bid_units[:volume], ask_units[:volume], strict=True):
        if trades and trades[-1][:2] == (b.id, a.id):
            trades[-1] = (b.id, a.id, trades[-1][2] + 1, price)
        else:
            trades.append((b.id, a.id, 1, price))
    return Reference(price, volume, fills, trades)


def walk_reference(bids: list[Order], asks: list[Order]) -> Reference:
    """Order-level walk of both curves with a two-pointer, for inputs too big to expand."""
    ranked_bids = sorted(bids, key=lambda o: (-o.price_micros, o.seq, o.id))
    ranked_asks = sorted(asks, key=lambda o: (o.price_micros, o.seq, o.id))
    left_b = [o.quantity_wh for o in ranked_bids]
    left_a = [o.quantity_wh for o in ranked_asks]
    i = j = 0
    pairs: list[tuple[int, int, int]] = []
    while i < len(ranked_bids) and j < len(ranked_asks):
        if ranked_bids[i].price_micros < ranked_asks[j].price_micros:
            break
        q = min(left_b[i], left_a[j])
        pairs.append((i, j, q))
        left_b[i] -= q
        left_a[j] -= q
        i += left_b[i] == 0
        j += left_a[j] == 0
    fills = {o.id: 0 for o in [*bids, *asks]}
    for pi, pj, q in pairs:
        fills[ranked_bids[pi].id] += q
        fills[ranked_asks[pj].id] += q
    if not pairs:
        return Reference(None, 0, fills, [])
    last_i, last_j, _ = pairs[-1]
    lo = ranked_asks[last_j].price_micros
    hi = ranked_bids[last_i].price_micros
    rejected_bid = (
        ranked_bids[last_i].price_micros
        if left_b[last_i]
        else (ranked_bids[last_i + 1].price_micros if last_i + 1 < len(ranked_bids) else None)
    )
    rejected_ask = (
        ranked_asks[last_j].price_micros
        if left_a[last_j]
        else (ranked_asks[last_j + 1].price_micros if last_j + 1 < len(ranked_asks) else None)
    )
    if rejected_bid is not None:
        lo = max(lo, rejected_bid)
    if rejected_ask is not None:
        hi = min(hi, rejected_ask)
    price = round(Fraction(lo + hi, 2))
    trades = [(ranked_bids[pi].id, ranked_asks[pj].id, q, price) for pi, pj, q in pairs]
    return Reference(price, sum(q for _, _, q in pairs), fills, trades)


def assert_matches(result: ClearingResult, reference: Reference) -> None:
    assert result.price_micros == reference.price
    assert result.volume_wh == reference.volume
    assert dict(result.fills) == reference.fills
    assert trade_tuples(result) == reference.trades


@pytest.mark.parametrize(
    ("unique_seqs", "quantities"),
    [(True, (1, 50_000)), (False, (1, 50_000)), (True, (1000, 1000)), (False, (500, 600))],
)
def test_walk_reference_agrees_on_a_large_random_book(
    unique_seqs: bool, quantities: tuple[int, int]
) -> None:
    # Unique seqs take the packed-sort path; repeated seqs the id tie-break path. Equal
    # quantities make bid and ask breakpoints coincide often.
    rng = random.Random(7)
    seqs = (
        rng.sample(range(10**6), 3000) if unique_seqs else [rng.randrange(300) for _ in range(3000)]
    )
    orders = [
        Order(
            f"o{k}",
            Side.BUY if k % 2 else Side.SELL,
            rng.randint(*quantities),
            rng.randrange(80_000, 220_000, 500),
            seqs[k],
        )
        for k in range(3000)
    ]
    bids = [o for o in orders if o.side is Side.BUY]
    asks = [o for o in orders if o.side is Side.SELL]

    result = clear_auction(bids, asks)

    assert result.volume_wh > 0
    assert_matches(result, walk_reference(bids, asks))


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@st.composite
def books(
    draw: st.DrawFn,
    *,
    max_orders: int = 14,
    max_quantity: int = 6,
    prices: tuple[int, int] = (1, 9),
) -> tuple[list[Order], list[Order]]:
    """Small books with many price and seq ties; ids are unique, seqs may repeat."""
    n_bids = draw(st.integers(0, max_orders))
    n_asks = draw(st.integers(0, max_orders))
    seq = st.integers(0, n_bids + n_asks)  # narrow range: equal seqs happen often
    ids = draw(
        st.lists(
            st.text("abcxyz", min_size=1, max_size=3),
            min_size=n_bids + n_asks,
            max_size=n_bids + n_asks,
            unique=True,
        )
    )
    quantity = st.integers(1, max_quantity)
    price = st.integers(*prices)
    bids = [Order(ids[k], Side.BUY, draw(quantity), draw(price), draw(seq)) for k in range(n_bids)]
    asks = [
        Order(ids[n_bids + k], Side.SELL, draw(quantity), draw(price), draw(seq))
        for k in range(n_asks)
    ]
    return bids, asks


@settings(max_examples=400, deadline=None)
@given(books())
def test_auction_matches_the_unit_brute_force(book: tuple[list[Order], list[Order]]) -> None:
    bids, asks = book

    result = clear_auction(bids, asks)

    assert_matches(result, unit_reference(bids, asks))
    assert_matches(result, walk_reference(bids, asks))


@settings(max_examples=150, deadline=None)
@given(books(max_orders=20, max_quantity=10**9, prices=(-(10**6), 10**7)))
def test_auction_matches_the_walk_on_wide_values(book: tuple[list[Order], list[Order]]) -> None:
    bids, asks = book

    assert_matches(clear_auction(bids, asks), walk_reference(bids, asks))


@settings(max_examples=300, deadline=None)
@given(books(max_quantity=20))
def test_auction_invariants(book: tuple[list[Order], list[Order]]) -> None:
    bids, asks = book
    by_id = {o.id: o for o in [*bids, *asks]}

    result = clear_auction(bids, asks)
    price = result.price_micros

    bought = sum(result.fills[b.id] for b in bids)
    sold = sum(result.fills[a.id] for a in asks)
    traded = sum(t.quantity_wh for t in result.trades)
    assert bought == sold == traded == result.volume_wh
    assert all(0 <= result.fills[o.id] <= o.quantity_wh for o in by_id.values())
    assert (result.buy_orders, result.sell_orders) == (len(bids), len(asks))
    if price is None:
        assert result.volume_wh == 0
        assert result.trades == ()
        # Nothing crossed: the best bid is below the best ask (or a side is empty).
        assert (
            not bids
            or not asks
            or max(b.price_micros for b in bids) < min(a.price_micros for a in asks)
        )
        return
    assert result.volume_wh > 0
    for trade in result.trades:
        assert trade.price_micros == price
        assert trade.quantity_wh > 0
        assert (
            by_id[trade.buy_order_id].price_micros
            >= price
            >= by_id[trade.sell_order_id].price_micros
        )
    # No accepted bid is priced below the clearing price, no accepted ask above it; an order
    # strictly better than the price is filled completely (else lo would exceed the price).
    for b in bids:
        if result.fills[b.id]:
            assert b.price_micros >= price
        if b.price_micros > price:
            assert result.fills[b.id] == b.quantity_wh
    for a in asks:
        if result.fills[a.id]:
            assert a.price_micros <= price
        if a.price_micros < price:
            assert result.fills[a.id] == a.quantity_wh
    # At most one partly filled order per side.
    assert sum(0 < result.fills[b.id] < b.quantity_wh for b in bids) <= 1
    assert sum(0 < result.fills[a.id] < a.quantity_wh for a in asks) <= 1
    # What buyers pay is what sellers receive; nobody pays above or receives below its limit.
    paid: Counter[str] = Counter()
    received: Counter[str] = Counter()
    for trade in result.trades:
        value = trade.value_micros
        paid[trade.buy_order_id] += value
        received[trade.sell_order_id] += value
        buyer, seller = by_id[trade.buy_order_id], by_id[trade.sell_order_id]
        assert value <= trade_value_micros(trade.quantity_wh, buyer.price_micros)
        assert value >= trade_value_micros(trade.quantity_wh, seller.price_micros)
    assert sum(paid.values()) == sum(received.values())


@settings(max_examples=200, deadline=None)
@given(books(), st.randoms(use_true_random=False))
def test_auction_ignores_input_order(
    book: tuple[list[Order], list[Order]], rnd: random.Random
) -> None:
    bids, asks = book
    shuffled_bids, shuffled_asks = bids[:], asks[:]
    rnd.shuffle(shuffled_bids)
    rnd.shuffle(shuffled_asks)

    first = clear_auction(bids, asks)
    second = clear_auction(shuffled_bids, shuffled_asks)
    again = clear_auction(bids, asks)

    for other in (second, again):
        assert other.price_micros == first.price_micros
        assert other.volume_wh == first.volume_wh
        assert other.trades == first.trades
        assert dict(other.fills) == dict(first.fills)
    assert trades_hash(second.trades, "2025-01-01T00:00:00Z") == trades_hash(
        first.trades, "2025-01-01T00:00:00Z"
    )


@settings(max_examples=200, deadline=None)
@given(books(max_quantity=1000))
def test_array_api_agrees_with_the_dataclass_api(book: tuple[list[Order], list[Order]]) -> None:
    bids, asks = book
    # Unique seqs, so the array API (no ids) ranks exactly like the dataclass API.
    bids = [Order(o.id, o.side, o.quantity_wh, o.price_micros, 2 * k) for k, o in enumerate(bids)]
    asks = [
        Order(o.id, o.side, o.quantity_wh, o.price_micros, 2 * k + 1) for k, o in enumerate(asks)
    ]

    arrays = clear_auction_arrays(
        bid_price=[o.price_micros for o in bids],
        bid_quantity=[o.quantity_wh for o in bids],
        bid_seq=[o.seq for o in bids],
        ask_price=[o.price_micros for o in asks],
        ask_quantity=[o.quantity_wh for o in asks],
        ask_seq=[o.seq for o in asks],
    )
    result = clear_auction(bids, asks)

    assert arrays.price_micros == result.price_micros
    assert arrays.volume_wh == result.volume_wh
    assert arrays.bid_filled.tolist() == [result.fills[o.id] for o in bids]
    assert arrays.ask_filled.tolist() == [result.fills[o.id] for o in asks]
    assert [
        (bids[b].id, asks[a].id, q)
        for b, a, q in zip(
            arrays.trade_bid.tolist(),
            arrays.trade_ask.tolist(),
            arrays.trade_quantity.tolist(),
            strict=True,
        )
    ] == [(t.buy_order_id, t.sell_order_id, t.quantity_wh) for t in result.trades]
