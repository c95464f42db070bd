"""The matching engine: pure, deterministic functions over plain values.

Units everywhere in this module: quantities are integer Wh (> 0), prices are integer micros per kWh
(1 currency unit = 1,000,000 micros), money is integer micros. No floats, no clock, no I/O.

Two mechanisms live here:

* :func:`clear_auction` / :func:`clear_auction_arrays`: the uniform-price double auction of
  docs/market.md, vectorised with numpy (one implementation; the dataclass API is a thin
  wrapper over the array API).
* :class:`ContinuousBook`: a price-time-priority book that matches on arrival at the resting
  order's price.

The exact rules, with a worked example and the canonical trades-hash form, are in docs/market.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from gridex.core.units import round_half_even

__all__ = [
    "AuctionArrays",
    "BookDepth",
    "ClearingResult",
    "ContinuousBook",
    "Order",
    "PriceLevel",
    "Side",
    "Trade",
    "aggregate_levels",
    "clear_auction",
    "clear_auction_arrays",
    "fee_micros",
    "trade_value_micros",
    "trades_hash",
]

IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]

_INT64_MAX = 2**63 - 1
_VOLUME_LIMIT = 2**61  # room to shift cumulative volumes left by one bit
_PRICE_LIMIT = 2**62  # keeps -price and price differences inside int64
_EPOCH_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True, slots=True)
class Order:
    """A limit order as the engine sees it.

    ``quantity_wh`` is integer Wh (> 0); ``price_micros`` is the limit in integer micros per kWh
    (a market order arrives with the band's max price for a buy, min price for a sell).
    ``seq`` is the arrival sequence: lower is earlier; equal ``seq`` is broken by ``id``.
    """

    id: str
    side: Side
    quantity_wh: int
    price_micros: int
    seq: int

    def __post_init__(self) -> None:
        if not isinstance(self.side, Side):
            raise ValueError(f"order {self.id!r}: side must be a Side, got {self.side!r}")
        if type(self.quantity_wh) is not int or self.quantity_wh <= 0:
            raise ValueError(f"order {self.id!r}: quantity_wh must be an int > 0")
        if type(self.price_micros) is not int or type(self.seq) is not int:
            raise ValueError(f"order {self.id!r}: price_micros and seq must be ints")


@dataclass(frozen=True, slots=True)
class Trade:
    """``quantity_wh`` Wh from the sell order to the buy order at ``price_micros``/kWh."""

    buy_order_id: str
    sell_order_id: str
    quantity_wh: int
    price_micros: int

    @property
    def value_micros(self) -> int:
        """What the buyer pays and the seller receives before fees, in micros."""
        return trade_value_micros(self.quantity_wh, self.price_micros)


# --------------------------------------------------------------------------------------------
# Money arithmetic
# --------------------------------------------------------------------------------------------


def trade_value_micros(wh: int, price_micros: int) -> int:
    """Micros for ``wh`` Wh at ``price_micros`` per kWh: ``wh * price / 1000`` half-even."""
    return round_half_even(wh * price_micros, 1000)


def fee_micros(value_micros: int, fee_bps: int) -> int:
    """Fee in micros on ``value_micros`` at ``fee_bps`` basis points (100 = 1 %), half-even."""
    if fee_bps < 0:
        raise ValueError("fee_bps must be >= 0")
    return round_half_even(value_micros * fee_bps, 10_000)


# --------------------------------------------------------------------------------------------
# Uniform-price double auction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class AuctionArrays:
    """Result of :func:`clear_auction_arrays`; every index refers to the caller's input arrays.

    ``price_micros`` is ``None`` (and ``volume_wh`` 0, every array of trades empty) when the
    curves do not cross. ``bid_filled[i]`` / ``ask_filled[j]`` are the Wh filled for input bid
    ``i`` / ask ``j`` (0 when rejected). Trade ``k`` moves ``trade_quantity[k]`` Wh from ask
    ``trade_ask[k]`` to bid ``trade_bid[k]`` at ``price_micros``; trades are in the two-pointer
    order of docs/market.md.
    """

    price_micros: int | None
    volume_wh: int
    bid_filled: IntArray
    ask_filled: IntArray
    trade_bid: IndexArray
    trade_ask: IndexArray
    trade_quantity: IntArray


def _int_array(values: Any, name: str) -> IntArray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind == "u" and array.dtype.itemsize >= 8 and int(array.max()) > _INT64_MAX:
        raise ValueError(f"{name} does not fit in int64")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _price_range(price: IntArray, quantity: IntArray) -> tuple[int, int]:
    """Validate one non-empty side; return its (min, max) price."""
    price_min, price_max = int(price.min()), int(price.max())
    if price_min < -_PRICE_LIMIT or price_max > _PRICE_LIMIT:
        raise ValueError("prices must be within +-2**62")
    if int(quantity.min()) <= 0 or int(quantity.max()) > _VOLUME_LIMIT // quantity.size:
        raise ValueError("quantities must be > 0 and sum to at most 2**61")
    return price_min, price_max


def _rank_side(
    price: IntArray,
    price_range: tuple[int, int],
    quantity: IntArray,
    seq: IntArray,
    ids: Sequence[str] | None,
    positions: IntArray,
    *,
    descending: bool,
) -> tuple[IndexArray, IntArray]:
    """Rank one side; return (input index by rank, cumulative quantity by rank).

    Rank is price (best first), then ``seq``, then id (input position when ``ids`` is None).
    ``positions`` is ``arange(len(price))`` or longer, shared to save an allocation.
    """
    n = price.size
    price_min, price_max = price_range
    cumulative = np.empty(n, dtype=np.int64)
    seq_min = int(seq.min())
    key_span = price_max - price_min + 1
    seq_span = int(seq.max()) - seq_min + 1
    index_bits = (n - 1).bit_length()
    order: IndexArray | None = None
    if (key_span * seq_span) << index_bits <= _INT64_MAX:
        # Pack (price key, seq, input position) into one int64 and sort the values: a plain sort
        # (SIMD) is several times faster than an argsort, and the positions fall out of the low
        # bits. In-place steps and reused buffers: on large inputs the cost is memory traffic.
        packed = np.subtract(price_max, price) if descending else np.subtract(price, price_min)
        packed *= seq_span
        packed += seq
        packed -= seq_min
        packed <<= index_bits
        packed |= positions[:n]
        packed.sort()
        np.right_shift(packed, index_bits, out=cumulative)  # (price key, seq) ranks, ascending
        if not bool(np.any(cumulative[1:] == cumulative[:-1])):
            packed &= (1 << index_bits) - 1
            order = packed.astype(np.intp, copy=False)
    if order is None:
        # Rare paths: a (price, seq) tie that needs the id, or keys too wide for one int64.
        key = -price if descending else price
        if ids is None:
            order = np.lexsort((seq, key))  # lexsort is stable: ties keep input position
        else:
            if len(ids) != n:
                raise ValueError("ids must have one entry per order")
            # Python's str order (code points); numpy's fixed-width strings drop trailing NULs.
            id_rank = np.empty(n, dtype=np.int64)
            id_rank[sorted(range(n), key=ids.__getitem__)] = np.arange(n, dtype=np.int64)
            order = np.lexsort((id_rank, seq, key))
    np.take(quantity, order, out=cumulative)
    np.cumsum(cumulative, out=cumulative)
    return order, cumulative


def _no_trade(n_bids: int, n_asks: int) -> AuctionArrays:
    return AuctionArrays(
        price_micros=None,
        volume_wh=0,
        bid_filled=np.zeros(n_bids, dtype=np.int64),
        ask_filled=np.zeros(n_asks, dtype=np.int64),
        trade_bid=np.zeros(0, dtype=np.intp),
        trade_ask=np.zeros(0, dtype=np.intp),
        trade_quantity=np.zeros(0, dtype=np.int64),
    )


def _midpoint_half_even(lo: int, hi: int) -> int:
    return round_half_even(lo + hi, 2)


def clear_auction_arrays(
    *,
    bid_price: npt.ArrayLike,
    bid_quantity: npt.ArrayLike,
    bid_seq: npt.ArrayLike,
    ask_price: npt.ArrayLike,
    ask_quantity: npt.ArrayLike,
    ask_seq: npt.ArrayLike,
    bid_ids: Sequence[str] | None = None,
    ask_ids: Sequence[str] | None = None,
) -> AuctionArrays:
    """Clear a uniform-price double auction over columnar inputs (the rule in docs/market.md).

    Prices are integer micros per kWh, quantities integer Wh (> 0), ``seq`` the arrival
    sequence. Orders of one side with equal price and ``seq`` are ordered by ``*_ids`` when
    given, else by input position. Bids rank by price descending, asks ascending, then by time.

    The traded volume V is the largest volume at which the marginal bid price is >= the
    marginal ask price; orders are filled in rank order up to V on each side, so only the last
    accepted order of a side can be partly filled (its rest counts as rejected at its price).
    ``lo = max(last accepted ask, first rejected bid)``, ``hi = min(last accepted bid, first
    rejected ask)``, a term left out when its side rejects nothing; the price is the midpoint
    of ``[lo, hi]`` rounded half-even. Trades pair accepted bids and asks in rank order.
    """
    bp = _int_array(bid_price, "bid_price")
    bq = _int_array(bid_quantity, "bid_quantity")
    bs = _int_array(bid_seq, "bid_seq")
    ap = _int_array(ask_price, "ask_price")
    aq = _int_array(ask_quantity, "ask_quantity")
    aseq = _int_array(ask_seq, "ask_seq")
    n_bids, n_asks = bp.size, ap.size
    if not (bq.size == bs.size == n_bids and aq.size == aseq.size == n_asks):
        raise ValueError("price, quantity and seq arrays of a side must have the same length")
    bid_range = _price_range(bp, bq) if n_bids else (0, 0)
    ask_range = _price_range(ap, aq) if n_asks else (0, 0)
    if n_bids == 0 or n_asks == 0:
        return _no_trade(n_bids, n_asks)

    positions = np.arange(max(n_bids, n_asks), dtype=np.int64)
    bids = _Ranked(bp, *_rank_side(bp, bid_range, bq, bs, bid_ids, positions, descending=True))
    asks = _Ranked(ap, *_rank_side(ap, ask_range, aq, aseq, ask_ids, positions, descending=False))
    crossing = _traded_volume(bids, asks)
    if crossing is None:
        return _no_trade(n_bids, n_asks)
    k_bid, k_ask, volume = crossing
    price = _clearing_price(bids, asks, k_bid, k_ask, volume)
    trade_bid, trade_ask, trade_quantity = _pair_trades(bids, asks, k_bid, k_ask, volume, positions)
    return AuctionArrays(
        price_micros=price,
        volume_wh=volume,
        bid_filled=_filled(bq, bids, k_bid, volume),
        ask_filled=_filled(aq, asks, k_ask, volume),
        trade_bid=trade_bid,
        trade_ask=trade_ask,
        trade_quantity=trade_quantity,
    )


@dataclass(frozen=True, slots=True, eq=False)
class _Ranked:
    """One side of the auction ranked: ``order[r]`` is the input index of rank ``r``,
    ``cum[r]`` the quantity of ranks ``0..r``."""

    price: IntArray
    order: IndexArray
    cum: IntArray

    def price_at(self, rank: int) -> int:
        return int(self.price[self.order[rank]])


def _traded_volume(bids: _Ranked, asks: _Ranked) -> tuple[int, int, int] | None:
    """(accepted bids, accepted asks, traded volume V), None when the curves do not cross.

    Bid of rank i covers the volumes (cum[i-1], cum[i]] of the demand curve, and likewise for
    asks. "Marginal bid price >= marginal ask price" holds on a prefix (0, V]."""
    if bids.price_at(0) < asks.price_at(0):
        return None
    # 1. The marginal bid is the last rank i at whose first volume the curves still cross.
    total_ask = int(asks.cum[-1])
    low, high = 0, bids.order.size - 1
    while low < high:
        mid = (low + high + 1) // 2
        start = int(bids.cum[mid - 1]) + 1
        if start <= total_ask and bids.price_at(mid) >= asks.price_at(
            int(asks.cum.searchsorted(start, side="left"))
        ):
            low = mid
        else:
            high = mid - 1
    k_bid = low + 1  # accepted bids, by rank
    # 2. Inside the marginal bid's segment the bid price is fixed, so the curves cross up to the
    # supply offered at or below it: V = min(end of that segment, that supply).
    marginal_bid = bids.price_at(low)
    low, high = 0, asks.order.size - 1  # ask rank 0 is priced at or below the marginal bid
    while low < high:
        mid = (low + high + 1) // 2
        if asks.price_at(mid) <= marginal_bid:
            low = mid
        else:
            high = mid - 1
    volume = min(int(bids.cum[k_bid - 1]), int(asks.cum[low]))
    k_ask = int(asks.cum.searchsorted(volume, side="left")) + 1
    return k_bid, k_ask, volume


def _first_rejected(side: _Ranked, accepted: int, volume: int) -> int | None:
    """The price of a side's first rejected order: the marginal order's unfilled rest, else the
    next order by rank; None when the side rejects nothing."""
    if int(side.cum[accepted - 1]) > volume:
        return side.price_at(accepted - 1)
    if accepted < side.order.size:
        return side.price_at(accepted)
    return None


def _clearing_price(bids: _Ranked, asks: _Ranked, k_bid: int, k_ask: int, volume: int) -> int:
    last_bid, last_ask = bids.price_at(k_bid - 1), asks.price_at(k_ask - 1)
    first_rejected_bid = _first_rejected(bids, k_bid, volume)
    first_rejected_ask = _first_rejected(asks, k_ask, volume)
    lo = last_ask if first_rejected_bid is None else max(last_ask, first_rejected_bid)
    hi = last_bid if first_rejected_ask is None else min(last_bid, first_rejected_ask)
    return _midpoint_half_even(lo, hi)


def _filled(quantity: IntArray, side: _Ranked, accepted: int, volume: int) -> IntArray:
    """Wh filled per input order: every accepted order fills completely except the last of the
    side, which gets the rest up to ``volume``."""
    filled = quantity.copy()
    filled[side.order[accepted:]] = 0
    filled[side.order[accepted - 1]] -= int(side.cum[accepted - 1]) - volume
    return filled


def _pair_trades(
    bids: _Ranked, asks: _Ranked, k_bid: int, k_ask: int, volume: int, positions: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """(bid, ask, quantity) of each trade, pairing accepted bids and asks in rank order.

    Two-pointer pairing, vectorised: each trade ends where either side's fill curve has a
    breakpoint. Merge both sides' breakpoints tagged by side (2v for a bid, 2v + 1 for an ask,
    so at an equal volume the bid comes first); at the first occurrence of each volume, the
    numbers of bid / ask breakpoints before it are the ranks of the bid / ask of that trade.
    Both curves end at V; the ask side's final breakpoint is left out as it would only repeat
    it."""
    size = k_bid + k_ask - 1
    tagged = np.empty(size, dtype=np.int64)
    np.left_shift(bids.cum[:k_bid], 1, out=tagged[:k_bid])
    tagged[k_bid - 1] = volume << 1  # the marginal bid's fill stops at V
    np.left_shift(asks.cum[: k_ask - 1], 1, out=tagged[k_bid:])
    tagged[k_bid:] |= 1
    tagged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
    counts = np.empty(size + 1, dtype=np.int64)
    counts[0] = 0
    np.bitwise_and(tagged, 1, out=counts[1:])
    np.cumsum(counts[1:], out=counts[1:])
    asks_before = counts[:-1]  # ask breakpoints before each entry
    tagged >>= 1  # volumes
    # A volume repeats only as a bid breakpoint directly followed by an equal ask breakpoint.
    repeat = tagged[1:] == tagged[:-1]
    if bool(repeat.any()):
        first = np.ones(size, dtype=bool)
        np.logical_not(repeat, out=first[1:])
        kept = np.flatnonzero(first)
        tagged, asks_before = tagged[kept], asks_before[kept]
    else:
        kept = positions[:size] if size <= positions.size else np.arange(size, dtype=np.int64)
    trade_quantity: IntArray = np.empty_like(tagged)
    trade_quantity[0] = tagged[0]
    np.subtract(tagged[1:], tagged[:-1], out=trade_quantity[1:])
    return bids.order[kept - asks_before], asks.order[asks_before], trade_quantity


@dataclass(frozen=True, slots=True, eq=False)
class ClearingResult:
    """Outcome of :func:`clear_auction`.

    ``price_micros`` (per kWh) is ``None`` when nothing crossed. ``volume_wh`` is the traded
    volume. ``trades`` and ``fills`` are built from ``arrays`` on first access (a million Python
    objects cost more than the clearing itself), then kept.
    """

    price_micros: int | None
    volume_wh: int
    buy_orders: int
    sell_orders: int
    bid_ids: tuple[str, ...]
    ask_ids: tuple[str, ...]
    arrays: AuctionArrays
    _trades: tuple[Trade, ...] | None = field(default=None, init=False, repr=False)
    _fills: Mapping[str, int] | None = field(default=None, init=False, repr=False)

    @property
    def trade_count(self) -> int:
        return int(self.arrays.trade_quantity.size)

    @property
    def trades(self) -> tuple[Trade, ...]:
        """Every trade, in canonical order, all at ``price_micros``."""
        if self._trades is None:
            price = self.price_micros if self.price_micros is not None else 0
            bid_ids, ask_ids = self.bid_ids, self.ask_ids
            trades = tuple(
                Trade(bid_ids[b], ask_ids[a], q, price)
                for b, a, q in zip(
                    self.arrays.trade_bid.tolist(),
                    self.arrays.trade_ask.tolist(),
                    self.arrays.trade_quantity.tolist(),
                    strict=True,
                )
            )
            object.__setattr__(self, "_trades", trades)
            return trades
        return self._trades

    @property
    def fills(self) -> Mapping[str, int]:
        """Filled Wh per order id, for every order in the auction (0 when nothing filled)."""
        if self._fills is None:
            fills = dict(zip(self.bid_ids, self.arrays.bid_filled.tolist(), strict=True))
            fills.update(zip(self.ask_ids, self.arrays.ask_filled.tolist(), strict=True))
            object.__setattr__(self, "_fills", fills)
            return fills
        return self._fills


def clear_auction(bids: Sequence[Order], asks: Sequence[Order]) -> ClearingResult:
    """Clear one epoch's uniform-price double auction (see :func:`clear_auction_arrays`).

    ``bids`` must all be ``Side.BUY``, ``asks`` all ``Side.SELL``, and every id unique. The
    order of the input lists does not matter: priority comes from price, ``seq`` and id.
    """
    if any(order.side is not Side.BUY for order in bids):
        raise ValueError("every bid must be a buy order")
    if any(order.side is not Side.SELL for order in asks):
        raise ValueError("every ask must be a sell order")
    bid_ids = tuple(order.id for order in bids)
    ask_ids = tuple(order.id for order in asks)
    if len(set(bid_ids).union(ask_ids)) != len(bid_ids) + len(ask_ids):
        raise ValueError("order ids must be unique")
    n_bids, n_asks = len(bids), len(asks)
    arrays = clear_auction_arrays(
        bid_price=np.fromiter((o.price_micros for o in bids), np.int64, n_bids),
        bid_quantity=np.fromiter((o.quantity_wh for o in bids), np.int64, n_bids),
        bid_seq=np.fromiter((o.seq for o in bids), np.int64, n_bids),
        ask_price=np.fromiter((o.price_micros for o in asks), np.int64, n_asks),
        ask_quantity=np.fromiter((o.quantity_wh for o in asks), np.int64, n_asks),
        ask_seq=np.fromiter((o.seq for o in asks), np.int64, n_asks),
        bid_ids=bid_ids,
        ask_ids=ask_ids,
    )
    return ClearingResult(
        price_micros=arrays.price_micros,
        volume_wh=arrays.volume_wh,
        buy_orders=n_bids,
        sell_orders=n_asks,
        bid_ids=bid_ids,
        ask_ids=ask_ids,
        arrays=arrays,
    )


def trades_hash(trades: Iterable[Trade], epoch_start_iso: str) -> str:
    """SHA-256 hex of the canonical JSON of an epoch's trades (the form is in docs/market.md).

    ``epoch_start_iso`` is the epoch's UTC start as ``YYYY-MM-DDTHH:MM:SSZ``; it is part of the
    hash so two epochs with identical trades do not share a hash.
    """
    if _EPOCH_ISO.fullmatch(epoch_start_iso) is None:
        raise ValueError("epoch_start_iso must look like 2025-06-01T12:15:00Z")
    document = {
        "epoch": epoch_start_iso,
        "trades": [
            {
                "buy_order_id": t.buy_order_id,
                "price_micros": t.price_micros,
                "quantity_wh": t.quantity_wh,
                "sell_order_id": t.sell_order_id,
            }
            for t in trades
        ],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Price levels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceLevel:
    """Resting interest at one price: ``quantity_wh`` summed over ``orders`` orders."""

    price_micros: int
    quantity_wh: int
    orders: int


@dataclass(frozen=True, slots=True)
class BookDepth:
    """Price levels, best first: bids by price descending, asks by price ascending."""

    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]


def aggregate_levels(orders: Iterable[Order]) -> BookDepth:
    """Aggregate open orders (e.g. an auction epoch's book) into price levels, best first."""
    totals: dict[tuple[Side, int], list[int]] = {}
    for order in orders:
        level = totals.setdefault((order.side, order.price_micros), [0, 0])
        level[0] += order.quantity_wh
        level[1] += 1
    bids = sorted(((p, q) for (s, p), q in totals.items() if s is Side.BUY), reverse=True)
    asks = sorted((p, q) for (s, p), q in totals.items() if s is Side.SELL)
    return BookDepth(
        bids=tuple(PriceLevel(p, q, n) for p, (q, n) in bids),
        asks=tuple(PriceLevel(p, q, n) for p, (q, n) in asks),
    )


# --------------------------------------------------------------------------------------------
# Continuous book
# --------------------------------------------------------------------------------------------


class _Resting:
    __slots__ = ("level", "order", "remaining")

    def __init__(self, order: Order, remaining: int, level: _Level) -> None:
        self.order = order
        self.remaining = remaining  # 0 marks a cancelled entry still sitting in its queue
        self.level = level


class _Level:
    __slots__ = ("count", "dead", "price", "quantity", "queue")

    def __init__(self, price: int) -> None:
        self.price = price
        self.queue: deque[_Resting] = deque()
        self.quantity = 0  # live Wh
        self.count = 0  # live orders
        self.dead = 0  # cancelled entries not yet dropped from the queue


class _BookSide:
    """Price levels of one side. ``keys`` is sorted ascending with the best price last."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # key = sign * price: +1 for bids (best = highest), -1 for asks
        self.keys: list[int] = []
        self.levels: dict[int, _Level] = {}

    def remove_level(self, level: _Level) -> None:
        key = self.sign * level.price
        if self.keys and self.keys[-1] == key:
            self.keys.pop()
        else:
            del self.keys[bisect_left(self.keys, key)]
        del self.levels[level.price]


class ContinuousBook:
    """A price-time-priority order book for one market (one region's epoch).

    An incoming order matches at once against resting orders of the other side whose price
    crosses its limit, best price first and, within a price, earliest ``add`` first, each trade
    at the resting order's price; what is left rests. The book is never left crossed.
    """

    __slots__ = ("_asks", "_bids", "_orders")

    def __init__(self) -> None:
        self._bids = _BookSide(1)
        self._asks = _BookSide(-1)
        self._orders: dict[str, _Resting] = {}

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def add(self, order: Order) -> list[Trade]:
        """Match ``order`` against the book, rest any remainder, and return the trades made."""
        if order.id in self._orders:
            raise ValueError(f"order {order.id!r} is already in the book")
        buying = order.side is Side.BUY
        limit = order.price_micros
        opposite = self._asks if buying else self._bids
        keys, levels, sign = opposite.keys, opposite.levels, opposite.sign
        remaining = order.quantity_wh
        trades: list[Trade] = []
        while remaining and keys:
            price = sign * keys[-1]
            if (price > limit) if buying else (price < limit):
                break
            level = levels[price]
            queue = level.queue
            while remaining and queue:
                resting = queue[0]
                if not resting.remaining:  # cancelled earlier
                    queue.popleft()
                    level.dead -= 1
                    continue
                take = min(remaining, resting.remaining)
                other = resting.order.id
                trades.append(
                    Trade(order.id, other, take, price)
                    if buying
                    else Trade(other, order.id, take, price)
                )
                remaining -= take
                resting.remaining -= take
                level.quantity -= take
                if not resting.remaining:
                    queue.popleft()
                    level.count -= 1
                    del self._orders[other]
            if not level.count:
                opposite.remove_level(level)
        if remaining:
            self._rest(order, remaining)
        return trades

    def _rest(self, order: Order, remaining: int) -> None:
        own = self._bids if order.side is Side.BUY else self._asks
        level = own.levels.get(order.price_micros)
        if level is None:
            level = own.levels[order.price_micros] = _Level(order.price_micros)
            key = own.sign * order.price_micros
            if not own.keys or own.keys[-1] < key:
                own.keys.append(key)
            else:
                insort(own.keys, key)
        resting = _Resting(order, remaining, level)
        level.queue.append(resting)
        level.quantity += remaining
        level.count += 1
        self._orders[order.id] = resting

    def cancel(self, order_id: str) -> Order | None:
        """Remove a resting order; return it with ``quantity_wh`` = what was still resting."""
        resting = self._orders.pop(order_id, None)
        if resting is None:
            return None
        level = resting.level
        rested = replace(resting.order, quantity_wh=resting.remaining)
        level.quantity -= resting.remaining
        level.count -= 1
        resting.remaining = 0
        side = self._bids if resting.order.side is Side.BUY else self._asks
        if not level.count:
            side.remove_level(level)
        else:
            level.dead += 1
            if level.dead > 32 and level.dead > level.count:
                # Lazy deletion must not let a busy level's queue grow without bound.
                level.queue = deque(r for r in level.queue if r.remaining)
                level.dead = 0
        return rested

    def get(self, order_id: str) -> Order | None:
        """The resting part of an order (``quantity_wh`` = unfilled rest), or ``None``."""
        resting = self._orders.get(order_id)
        return None if resting is None else replace(resting.order, quantity_wh=resting.remaining)

    def best_bid(self) -> int | None:
        keys = self._bids.keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self._asks.keys
        return -keys[-1] if keys else None

    def depth(self, max_levels: int | None = None) -> BookDepth:
        """Aggregated price levels, best first, at most ``max_levels`` per side."""

        def levels(side: _BookSide) -> tuple[PriceLevel, ...]:
            keys = (
                side.keys
                if max_levels is None
                else side.keys[max(0, len(side.keys) - max_levels) :]
            )
            return tuple(
                PriceLevel(level.price, level.quantity, level.count)
                for level in (side.levels[side.sign * key] for key in reversed(keys))
            )

        if max_levels is not None and max_levels < 0:
            raise ValueError("max_levels must be >= 0")
        return BookDepth(bids=levels(self._bids), asks=levels(self._asks))
