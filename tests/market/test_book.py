"""The continuous price-time-priority book of ``gridex.market.engine``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridex.market.engine import BookDepth, ContinuousBook, Order, PriceLevel, Side, Trade


def buy(order_id: str, quantity_wh: int, price_micros: int, seq: int = 0) -> Order:
    return Order(order_id, Side.BUY, quantity_wh, price_micros, seq)


def sell(order_id: str, quantity_wh: int, price_micros: int, seq: int = 0) -> Order:
    return Order(order_id, Side.SELL, quantity_wh, price_micros, seq)


def levels(depth: tuple[PriceLevel, ...]) -> list[tuple[int, int, int]]:
    return [(lv.price_micros, lv.quantity_wh, lv.orders) for lv in depth]


def test_incoming_buy_trades_at_the_resting_price_and_the_rest_rests() -> None:
    book = ContinuousBook()
    assert book.add(sell("s1", 100, 50)) == []

    trades = book.add(buy("b1", 160, 70))

    assert trades == [Trade("b1", "s1", 100, 50)]
    assert (book.best_bid(), book.best_ask()) == (70, None)
    assert book.get("b1") == buy("b1", 60, 70)
    assert "s1" not in book
    assert len(book) == 1


def test_incoming_sell_trades_at_the_resting_bid_price() -> None:
    book = ContinuousBook()
    book.add(buy("b1", 10, 90))

    assert book.add(sell("s1", 4, 60)) == [Trade("b1", "s1", 4, 90)]
    assert book.get("b1") == buy("b1", 6, 90)


def test_price_then_time_priority_across_levels() -> None:
    book = ContinuousBook()
    book.add(sell("s_late_cheap", 5, 48))
    book.add(sell("s_first", 5, 50))
    book.add(sell("s_second", 5, 50))
    book.add(sell("s_dear", 5, 55))
    book.add(sell("s_cheapest", 5, 47))

    trades = book.add(buy("b", 18, 50))

    assert trades == [
        Trade("b", "s_cheapest", 5, 47),
        Trade("b", "s_late_cheap", 5, 48),
        Trade("b", "s_first", 5, 50),
        Trade("b", "s_second", 3, 50),
    ]
    assert levels(book.depth().asks) == [(50, 2, 1), (55, 5, 1)]
    assert book.depth().bids == ()


def test_no_trade_when_prices_do_not_cross() -> None:
    book = ContinuousBook()
    book.add(sell("s", 5, 51))

    assert book.add(buy("b", 5, 50)) == []
    assert (book.best_bid(), book.best_ask()) == (50, 51)


def test_equal_prices_cross() -> None:
    book = ContinuousBook()
    book.add(buy("b", 5, 50))

    assert book.add(sell("s", 5, 50)) == [Trade("b", "s", 5, 50)]
    assert (book.best_bid(), book.best_ask(), len(book)) == (None, None, 0)


def test_cancel_returns_what_rested_and_removes_it_from_matching() -> None:
    book = ContinuousBook()
    book.add(sell("s1", 10, 50))
    book.add(sell("s2", 10, 50))
    book.add(buy("b1", 4, 50))  # takes 4 from s1

    assert book.cancel("s1") == sell("s1", 6, 50)
    assert book.cancel("s1") is None
    assert book.cancel("nope") is None
    assert book.add(buy("b2", 3, 60)) == [Trade("b2", "s2", 3, 50)]
    assert levels(book.depth().asks) == [(50, 7, 1)]


def test_cancelling_the_last_order_of_a_level_removes_the_level() -> None:
    book = ContinuousBook()
    book.add(buy("b1", 1, 40))
    book.add(buy("b2", 1, 45))
    book.add(buy("b3", 1, 42))

    book.cancel("b3")
    assert levels(book.depth().bids) == [(45, 1, 1), (40, 1, 1)]
    book.cancel("b2")
    assert book.best_bid() == 40


def test_many_cancels_at_one_level_keep_order_and_totals() -> None:
    book = ContinuousBook()
    for k in range(100):
        book.add(sell(f"s{k}", 1, 50))
    for k in range(0, 99, 2):
        book.cancel(f"s{k}")
    for k in range(1, 60, 2):
        book.cancel(f"s{k}")

    assert levels(book.depth().asks) == [(50, 20, 20)]
    trades = book.add(buy("b", 25, 50))
    assert [t.sell_order_id for t in trades] == [f"s{k}" for k in range(61, 100, 2)]
    assert book.best_bid() == 50
    assert book.get("b") == buy("b", 5, 50)


def test_depth_is_best_first_and_can_be_limited() -> None:
    book = ContinuousBook()
    for k, price in enumerate([40, 42, 44, 42]):
        book.add(buy(f"b{k}", 10 + k, price))
    for k, price in enumerate([50, 47, 49]):
        book.add(sell(f"s{k}", 1, price))

    assert book.depth() == BookDepth(
        bids=(PriceLevel(44, 12, 1), PriceLevel(42, 24, 2), PriceLevel(40, 10, 1)),
        asks=(PriceLevel(47, 1, 1), PriceLevel(49, 1, 1), PriceLevel(50, 1, 1)),
    )
    limited = book.depth(max_levels=1)
    assert levels(limited.bids) == [(44, 12, 1)]
    assert levels(limited.asks) == [(47, 1, 1)]
    assert book.depth(max_levels=0) == BookDepth((), ())
    assert book.depth(max_levels=10) == book.depth()
    with pytest.raises(ValueError, match="max_levels"):
        book.depth(max_levels=-1)


def test_duplicate_id_is_refused() -> None:
    book = ContinuousBook()
    book.add(buy("x", 1, 40))

    with pytest.raises(ValueError, match="already"):
        book.add(sell("x", 1, 60))


# ---------------------------------------------------------------------------------------------
# Against a naive reference
# ---------------------------------------------------------------------------------------------


@dataclass
class _Resting:
    order: Order
    remaining: int
    arrival: int


class NaiveBook:
    """Scan every resting order on each add: obviously right, O(n) per match."""

    def __init__(self) -> None:
        self.resting: list[_Resting] = []
        self.arrivals = 0

    def add(self, order: Order) -> list[Trade]:
        remaining = order.quantity_wh
        trades: list[Trade] = []
        buying = order.side is Side.BUY
        while remaining:
            candidates = [
                r
                for r in self.resting
                if r.order.side is not order.side
                and (
                    r.order.price_micros <= order.price_micros
                    if buying
                    else r.order.price_micros >= order.price_micros
                )
            ]
            if not candidates:
                break
            best = min(
                candidates,
                key=lambda r: (
                    r.order.price_micros if buying else -r.order.price_micros,
                    r.arrival,
                ),
            )
            take = min(remaining, best.remaining)
            price = best.order.price_micros
            trades.append(
                Trade(order.id, best.order.id, take, price)
                if buying
                else Trade(best.order.id, order.id, take, price)
            )
            remaining -= take
            best.remaining -= take
            if not best.remaining:
                self.resting.remove(best)
        if remaining:
            self.resting.append(_Resting(order, remaining, self.arrivals))
            self.arrivals += 1
        return trades

    def cancel(self, order_id: str) -> Order | None:
        for r in self.resting:
            if r.order.id == order_id:
                self.resting.remove(r)
                return Order(order_id, r.order.side, r.remaining, r.order.price_micros, r.order.seq)
        return None

    def depth(self) -> BookDepth:
        def side(s: Side, best_first: bool) -> tuple[PriceLevel, ...]:
            prices = sorted(
                {r.order.price_micros for r in self.resting if r.order.side is s},
                reverse=best_first,
            )
            return tuple(
                PriceLevel(
                    p,
                    sum(
                        r.remaining
                        for r in self.resting
                        if r.order.side is s and r.order.price_micros == p
                    ),
                    sum(1 for r in self.resting if r.order.side is s and r.order.price_micros == p),
                )
                for p in prices
            )

        return BookDepth(bids=side(Side.BUY, True), asks=side(Side.SELL, False))


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(1, 8),
            st.integers(40, 50),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 200)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_book_matches_the_naive_reference_and_conserves_quantity(
    ops: list[tuple[object, ...]],
) -> None:
    book, naive = ContinuousBook(), NaiveBook()
    added: list[Order] = []
    filled: dict[str, int] = {}
    cancelled: dict[str, int] = {}
    for op in ops:
        if op[0] == "add":
            _, side, quantity, price = op
            assert isinstance(side, Side)
            assert isinstance(quantity, int)
            assert isinstance(price, int)
            order = Order(f"o{len(added)}", side, quantity, price, len(added))
            added.append(order)
            trades = book.add(order)
            assert trades == naive.add(order)
            for t in trades:
                filled[t.buy_order_id] = filled.get(t.buy_order_id, 0) + t.quantity_wh
                filled[t.sell_order_id] = filled.get(t.sell_order_id, 0) + t.quantity_wh
                buyer = next(o for o in added if o.id == t.buy_order_id)
                seller = next(o for o in added if o.id == t.sell_order_id)
                assert buyer.price_micros >= t.price_micros >= seller.price_micros
        else:
            target = op[1]
            assert isinstance(target, int)
            if not added:
                continue
            order_id = added[target % len(added)].id
            rested = book.cancel(order_id)
            assert rested == naive.cancel(order_id)
            if rested is not None:
                cancelled[order_id] = rested.quantity_wh
        expected = naive.depth()
        assert book.depth() == expected
        assert book.depth(max_levels=2) == BookDepth(expected.bids[:2], expected.asks[:2])
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask
    # Every Wh of every order is filled, resting or cancelled; nothing more, nothing less.
    for order in added:
        rest = book.get(order.id)
        resting = rest.quantity_wh if rest is not None else 0
        assert filled.get(order.id, 0) + resting + cancelled.get(order.id, 0) == order.quantity_wh
    assert len(book) == len(naive.resting)
