"""How ledger entries become chain transactions: pure planning, no I/O.

**The rule for negative balances.** A token balance cannot go below zero, but a user's ledger
balance can (a settlement charge makes a debt). So the chain mirrors, per holder:

- a user: ``max(0, available + reserved)`` credits, in the user's credit token account;
- the platform's ``escrow`` and ``fees``: their ledger balances (never negative);
- ``deposits``, ``grid`` and ``payouts`` are money outside the platform: no token account. Money
  that comes from them is minted, money that goes to them is burned.

The mirror keeps, per holder, the ledger balance it has mirrored so far (``chain_holders``).
Each entry moves those balances; the change of each holder's *on-chain* balance under the rule
above is its delta. A user in debt therefore holds zero credits, and a later top-up mints only
what takes the balance above zero: the mirror catches up when the debt is repaid. Because the
on-chain balance is a function of the mirrored balance alone, the result does not depend on the
order entries are handled in.

Deltas of consecutive entries are netted into one transaction (up to the size limit):
decreases pay increases by ``transfer_checked``, an increase left over is minted, a decrease
left over is burned. Settlement entries of one epoch go together, with the epoch's energy:
the Wh each seller delivered are minted to the seller and moved to the buyer in the same
transaction as the credits (delivery versus payment), with a memo of the epoch's start and
``trades_hash``.

**Lanes.** The platform's escrow, fees and energy pool are split into lanes (see
:mod:`gridex.chain.tokens`): money a buyer puts into escrow goes to the buyer's lane, and the
settlement payouts and revenue shares of the buyer's trades leave from it, so each lane's escrow
holds what its buyers still owe and is never negative. Those payouts are planned per (epoch,
lane): a lane's transactions write only that lane's escrow, fees and energy pool, are paid for
by that lane's fee payer, and share no writable platform account with another lane, so a chain
that runs transactions in parallel runs the lanes in parallel. The epoch's delivered energy is
minted into the lanes' pools by one transaction ahead of them (the only one of the batch that
writes the energy mint); each lane transaction moves a seller's delivered Wh from its pool to
the seller and on to the buyer, with the payment. Lane transactions only take money out of
escrow, which earlier transactions (the clearing's) put there, so they may run ahead of other
transactions planned after them without any balance going short.

Energy follows the same idea per trade: the mirror keeps the Wh it has delivered on chain for
each trade (``chain_trade_energy``). A trade's settlement payout delivers what its seller
delivered; a re-settlement of the epoch after a reading correction re-checks every trade the
mirror has delivered and moves only the difference (more Wh minted to the seller and moved to
the buyer, or fewer: the excess burned from the buyer).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gridex.chain.models import TxKind
from gridex.ledger.models import AccountKind, EntryType

ESCROW = "escrow"
FEES = "fees"
PLATFORM_HOLDERS = {AccountKind.escrow.value: ESCROW, AccountKind.fees.value: FEES}
# Entries that settlement posts: they travel with their epoch's energy and memo.
SETTLEMENT_TYPES = frozenset(
    {
        EntryType.settlement_payout.value,
        EntryType.revenue_share.value,
        EntryType.settlement_charge.value,
        EntryType.settlement_credit.value,
    }
)
# A re-settlement's adjustment of an epoch: it travels with its epoch and re-checks its energy.
RESETTLEMENT_TYPE = EntryType.adjustment.value
# Entries that only take money out of a lane's escrow: planned per (epoch, lane).
LANE_TYPES = frozenset({EntryType.settlement_payout.value, EntryType.revenue_share.value})
# Solana's packet limit on a serialised transaction.
MAX_TX_BYTES = 1232
_FIXED_KEYS = 7  # platform, escrow, fees, two mints, token and memo programs
_LANE_KEYS = 2  # a lane's fee payer and energy pool
_INSTRUCTION_BYTES = 18  # a token instruction: program, 3-4 account indexes, 10 data bytes
_OVERHEAD = 1 + 64 + 3 + 1 + 32 + 1  # signature count and one signature, header, blockhash
_SIGNATURE = 64


def lane_holder(name: str, lane: int) -> str:
    """The chain holder of lane ``lane`` of the platform's ``escrow`` or ``fees``: lane 0 is
    the plain name (the original account), the others ``<name>:<lane>``."""
    return name if lane == 0 else f"{name}:{lane}"


def platform_lane(holder: str) -> tuple[str, int] | None:
    """(``escrow`` | ``fees``, lane) of a platform holder; None for a user."""
    name, _, lane = holder.partition(":")
    if name not in (ESCROW, FEES):
        return None
    return name, int(lane or 0)


def holder_of(kind: str, user_id: uuid.UUID | None, lane: int = 0) -> str | None:
    """The chain holder of a ledger account (a platform account's in ``lane``), or None for
    money outside the platform."""
    if user_id is not None:
        return str(user_id)
    name = PLATFORM_HOLDERS.get(kind)
    return None if name is None else lane_holder(name, lane)


def on_chain(holder: str, ledger_micros: int) -> int:
    """What ``holder`` holds on chain when its mirrored ledger balance is ``ledger_micros``."""
    return ledger_micros if platform_lane(holder) else max(0, ledger_micros)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A trade's delivered energy as it stands now. ``first``: the trade's settlement payout,
    which delivers it on chain for the first time; otherwise a re-check after re-settlement,
    which only moves the difference for a trade the mirror has already delivered."""

    trade_id: uuid.UUID
    seller: str
    buyer: str
    wh: int
    first: bool = True


@dataclass(frozen=True, slots=True)
class JournalItem:
    """One ledger entry as the mirror reads it: its postings summed per chain holder (money
    outside the platform left out), and for settlement its epoch and delivered energy."""

    entry_id: uuid.UUID
    type: str
    moves: dict[str, int]
    epoch_id: uuid.UUID | None = None
    deliveries: tuple[Delivery, ...] = ()
    # The lane of a payout or revenue share (its buyer's), planned with its lane.
    lane: int | None = None


@dataclass
class TxPlan:
    """One transaction to be: net credit changes per holder and energy per (seller, buyer)
    (negative when a re-settlement takes energy back from the buyer)."""

    epoch_id: uuid.UUID | None
    credits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    energy: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    users: set[str] = field(default_factory=set)
    # A lane's transaction: paid by the lane's payer, energy taken from the lane's pool.
    lane: int | None = None
    # The energy minted into each lane's pool ahead of the lanes' transactions.
    pools: dict[int, int] = field(default_factory=dict)

    @property
    def kind(self) -> TxKind:
        if self.epoch_id is not None:
            return TxKind.settlement
        changes = [d for d in self.credits.values() if d]
        if changes and all(d > 0 for d in changes):
            return TxKind.mint_credit
        if changes and all(d < 0 for d in changes):
            return TxKind.burn_credit
        return TxKind.transfer

    @property
    def empty(self) -> bool:
        return not any((*self.credits.values(), *self.energy.values(), *self.pools.values()))

    def estimated_bytes(self, memo_bytes: int) -> int:
        sellers = {seller for (seller, _), wh in self.energy.items() if wh > 0}
        instructions = len(self.credits) + len(sellers) + len(self.energy) + len(self.pools)
        # The fixed keys hold one escrow and one fees account; a plan outside the lanes may
        # move several lanes' (a payout to a seller in debt keeps its buyer's lane).
        lanes = len({h for h in self.credits if platform_lane(h) is not None})
        keys = _FIXED_KEYS + max(0, lanes - 2) + 2 * len(self.users) + len(self.pools)
        overhead = _OVERHEAD
        if self.lane is not None:
            keys += _LANE_KEYS
            overhead += _SIGNATURE
        return overhead + 32 * keys + _INSTRUCTION_BYTES * instructions + memo_bytes + 8


@dataclass
class Planner:
    """Turns journal items into transaction plans, moving ``balances`` (holder -> mirrored
    ledger micros), ``energy`` (holder -> Wh received) and ``trade_energy`` (trade -> Wh
    delivered on chain) as it goes."""

    balances: dict[str, int]
    energy: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    trade_energy: dict[uuid.UUID, int] = field(default_factory=dict)
    memo_bytes: int = 100
    plans: list[TxPlan] = field(default_factory=list)
    # The plan each (epoch, lane) is filling.
    lanes: dict[tuple[uuid.UUID | None, int], TxPlan] = field(default_factory=dict)

    def add(self, item: JournalItem) -> None:
        deltas: dict[str, int] = {}
        for holder, amount in item.moves.items():
            before = self.balances.get(holder, 0)
            self.balances[holder] = before + amount
            change = on_chain(holder, before + amount) - on_chain(holder, before)
            if change:
                deltas[holder] = change
        energy = self._energy_changes(item.deliveries)
        # A payout to a user in debt shows less on chain than it takes from escrow: the rest is
        # burned, which writes the credit mint, so such an item leaves its lane.
        lane = item.lane if not sum(deltas.values()) else None
        # A re-check may change many trades: one energy change per part, so each fits the room
        # a plan keeps for an item.
        parts = [(deltas, energy[:1])] + [({}, [change]) for change in energy[1:]]
        for credits, moves in parts:
            if not credits and not moves:
                continue
            users = {h for h in credits if platform_lane(h) is None}
            users |= {h for seller, buyer, _ in moves for h in (seller, buyer)}
            plan = self._plan_for(item.epoch_id, lane, users, set(credits))
            for holder, change in credits.items():
                plan.credits[holder] += change
            for seller, buyer, wh in moves:
                plan.energy[(seller, buyer)] += wh
                self.energy[buyer] += wh
            plan.users |= users

    def _energy_changes(self, deliveries: Iterable[Delivery]) -> list[tuple[str, str, int]]:
        """(seller, buyer, Wh to move) for each delivery that changes what is on chain."""
        out = []
        for delivery in deliveries:
            before = self.trade_energy.get(delivery.trade_id)
            if before is None and not delivery.first:
                continue  # not delivered on chain yet: its payout will deliver it as it is then
            self.trade_energy[delivery.trade_id] = delivery.wh
            if delivery.wh != (before or 0):
                out.append((delivery.seller, delivery.buyer, delivery.wh - (before or 0)))
        return out

    def _plan_for(
        self, epoch_id: uuid.UUID | None, lane: int | None, users: set[str], holders: set[str]
    ) -> TxPlan:
        """The open plan if this item fits in it, else a new one. A lane's item goes to its
        (epoch, lane)'s plan; any other item only to the last plan, if that is not a lane's."""
        if lane is not None:
            open_plan = self.lanes.get((epoch_id, lane))
        else:
            last = self.plans[-1] if self.plans else None
            open_plan = last if last is not None and last.lane is None else None
        if open_plan is not None and open_plan.epoch_id == epoch_id:
            credits = dict(open_plan.credits) | dict.fromkeys(holders - open_plan.credits.keys(), 1)
            trial = TxPlan(epoch_id, credits, open_plan.energy, open_plan.users | users, lane)
            # Room for this item's instructions too (one credit and two energy at most).
            if trial.estimated_bytes(self.memo_bytes) + 3 * _INSTRUCTION_BYTES <= MAX_TX_BYTES:
                return open_plan
        plan = TxPlan(epoch_id, lane=lane)
        self.plans.append(plan)
        if lane is not None:
            self.lanes[(epoch_id, lane)] = plan
        return plan

    def result(self) -> list[TxPlan]:
        """The plans in sending order: before an epoch's first lane plan, the plan that mints
        the energy its lane plans deliver into the lanes' pools."""
        pools: dict[uuid.UUID | None, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for plan in self.plans:
            if plan.lane is not None:
                delivered = sum(wh for wh in plan.energy.values() if wh > 0)
                if delivered:
                    pools[plan.epoch_id][plan.lane] += delivered
        out: list[TxPlan] = []
        for plan in self.plans:
            if plan.lane is not None and plan.epoch_id in pools:
                out.append(
                    TxPlan(plan.epoch_id, pools=dict(sorted(pools.pop(plan.epoch_id).items())))
                )
            if not plan.empty:
                out.append(plan)
        return out


def delivered_by_trade(
    trades: Iterable[tuple[uuid.UUID, uuid.UUID, int, int]],
    delivered_by_seller: dict[uuid.UUID, int],
) -> dict[uuid.UUID, int]:
    """Each trade's delivered Wh: a seller's delivered energy (``min(sold, exported)``) fills
    its trades in canonical order. ``trades``: (trade id, seller id, seq, quantity Wh)."""
    left = dict(delivered_by_seller)
    out: dict[uuid.UUID, int] = {}
    for trade_id, seller, _, quantity in sorted(trades, key=lambda t: t[2]):
        take = min(quantity, max(0, left.get(seller, 0)))
        left[seller] = left.get(seller, 0) - take
        out[trade_id] = take
    return out


def split(
    deltas: dict[str, int],
) -> tuple[list[tuple[str, str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """Net changes as (transfers source -> dest, mints, burns), pairing decreases with
    increases in holder order so that the same changes always give the same instructions."""
    sources = [(h, -d) for h, d in sorted(deltas.items()) if d < 0]
    dests = [(h, d) for h, d in sorted(deltas.items()) if d > 0]
    transfers: list[tuple[str, str, int]] = []
    mints: list[tuple[str, int]] = []
    i = 0
    left = sources[0][1] if sources else 0
    for dest, wanted in dests:
        while wanted and i < len(sources):
            amount = min(left, wanted)
            transfers.append((sources[i][0], dest, amount))
            left, wanted = left - amount, wanted - amount
            if not left:
                i += 1
                left = sources[i][1] if i < len(sources) else 0
        if wanted:
            mints.append((dest, wanted))
    burns = ([(sources[i][0], left)] if i < len(sources) and left else []) + sources[i + 1 :]
    return transfers, mints, burns
