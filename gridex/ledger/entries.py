"""What a journal entry is and the rules every posting obeys, as pure code (no I/O).

A posting of any size, one entry or an epoch's thousands, is planned here first: each entry is
checked to balance, its legs are put in account-id order (the one lock order of every money move),
and per account the plan works out the net change of the whole batch and the least balance the
account must have before it so that no guarded debit takes it below zero at its own place in the
batch (exactly as if the entries were posted one by one). The repository then writes a plan in
one go; this module alone says what may be written.

Units and signs: every ``*_micros`` value is integer micro-units of the deployment currency; a
leg's amount is signed and added to its account's balance.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gridex.core.units import micros_to_money
from gridex.ledger.errors import InsufficientFunds, UnbalancedEntry
from gridex.ledger.models import PLATFORM_KINDS, AccountKind, EntryType, ReferenceType, account_id

# Accounts that never go below zero. `available` may only through `allow_debt` (a settlement
# charge); `deposits` and `grid` are counterparts of money outside the ledger and go negative.
GUARDED_KINDS = frozenset(
    {
        AccountKind.available,
        AccountKind.reserved,
        AccountKind.escrow,
        AccountKind.fees,
        AccountKind.payouts,
    }
)
# Least balance of an account no guarded debit of the batch touches: any balance passes.
ANY_BALANCE = -(2**62)


@dataclass(frozen=True, slots=True)
class AccountRef:
    """A user's account (``user_id`` set, kind ``available`` or ``reserved``) or a platform
    account (``user_id`` None); its id is deterministic, so no lookup is needed."""

    kind: AccountKind
    user_id: uuid.UUID | None = None
    # Derived from the two above once, at construction: planning a batch reads it per leg.
    id: uuid.UUID = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.user_id is None) != (self.kind in PLATFORM_KINDS):
            raise ValueError(f"account kind {self.kind} with user_id={self.user_id}")
        object.__setattr__(self, "id", account_id(self.kind, self.user_id))


def user_account(user_id: uuid.UUID, kind: AccountKind = AccountKind.available) -> AccountRef:
    return AccountRef(kind, user_id)


def platform_account(kind: AccountKind) -> AccountRef:
    return AccountRef(kind)


ESCROW = platform_account(AccountKind.escrow)
FEES = platform_account(AccountKind.fees)
GRID = platform_account(AccountKind.grid)
DEPOSITS = platform_account(AccountKind.deposits)
PAYOUTS = platform_account(AccountKind.payouts)


@dataclass(frozen=True, slots=True)
class Leg:
    """One posting to be made: ``amount_micros`` is signed (added to the account's balance).

    ``on_behalf_of`` tags a platform account's posting with the user it concerns (the buyer whose
    money sits in escrow), which is how ``escrow_pending`` and a user's history find it.
    ``allow_debt`` lets this debit take a user's ``available`` below zero (a settlement charge);
    no other account may be given it.
    """

    account: AccountRef
    amount_micros: int
    on_behalf_of: uuid.UUID | None = None
    allow_debt: bool = False

    def __post_init__(self) -> None:
        if self.allow_debt and self.account.kind is not AccountKind.available:
            raise ValueError(f"allow_debt on a {self.account.kind} account")


@dataclass(frozen=True, slots=True)
class Reference:
    """What an entry is about (an order, a trade...); ``id`` is stored as text, cut to 64."""

    type: ReferenceType
    id: object


@dataclass(frozen=True, slots=True)
class NewEntry:
    """One balanced entry to post (``allow_debt`` is per leg)."""

    type: EntryType | str
    legs: Sequence[Leg]
    description: str = ""
    reference: Reference | None = None


def positive_micros(amount_micros: int) -> int:
    """``amount_micros`` itself, if it is a positive int (else ``ValueError``)."""
    if type(amount_micros) is not int or amount_micros <= 0:
        raise ValueError(f"amount must be a positive int of micros, got {amount_micros!r}")
    return amount_micros


@dataclass(frozen=True, slots=True)
class Transfer:
    """``amount_micros`` (positive) from ``source`` to ``destination``, as one two-posting
    entry; ``allow_debt`` is that of the source leg."""

    source: AccountRef
    destination: AccountRef
    amount_micros: int
    type: EntryType | str = EntryType.transfer
    description: str = ""
    reference: Reference | None = None
    on_behalf_of: uuid.UUID | None = None
    allow_debt: bool = False

    def entry(self) -> NewEntry:
        amount = positive_micros(self.amount_micros)
        return NewEntry(
            self.type,
            (
                Leg(self.source, -amount, self.on_behalf_of, self.allow_debt),
                Leg(self.destination, amount, self.on_behalf_of),
            ),
            self.description,
            self.reference,
        )


@dataclass(frozen=True, slots=True)
class PostedLeg:
    """A posting as written: its signed amount and the account's balance right after it."""

    account: AccountRef
    amount_micros: int
    balance_after_micros: int


@dataclass(frozen=True, slots=True)
class PostedEntry:
    """An entry as written: its legs' amounts sum to zero."""

    id: uuid.UUID
    type: str
    created_at: datetime
    # In account-id order, as stored.
    legs: tuple[PostedLeg, ...]


def check_balanced(legs: Sequence[Leg]) -> None:
    """The in-code invariant every entry passes (PostgreSQL also checks it in a trigger): two or
    more non-zero int postings that sum to zero."""
    if len(legs) < 2:
        raise UnbalancedEntry("an entry needs at least two postings")
    for leg in legs:
        if type(leg.amount_micros) is not int or leg.amount_micros == 0:
            raise UnbalancedEntry(f"posting amount must be a non-zero int: {leg.amount_micros!r}")
    if sum(leg.amount_micros for leg in legs) != 0:
        raise UnbalancedEntry("postings do not sum to zero")


def guarded(leg: Leg) -> bool:
    """Whether ``leg``, if it is a debit, may not take its account below zero: every guarded
    kind, unless the leg allows debt (only a user's ``available`` can)."""
    return leg.account.kind in GUARDED_KINDS and not leg.allow_debt


def with_debt_allowed(legs: Sequence[Leg]) -> list[Leg]:
    """``legs`` with debt allowed on every ``available`` leg (a settlement charge's entry)."""
    return [
        Leg(leg.account, leg.amount_micros, leg.on_behalf_of, allow_debt=True)
        if leg.account.kind is AccountKind.available
        else leg
        for leg in legs
    ]


@dataclass(frozen=True, slots=True)
class PlannedEntry:
    """One entry of a plan, ready to write, with the columns of its row."""

    id: uuid.UUID
    type: str
    reference_type: str | None
    reference_id: str | None
    description: str
    # In account-id order (stable: legs of one account keep their given order).
    legs: tuple[Leg, ...]
    # Per leg: its account's id; the posting's user (the account's owner, or for a platform
    # account the user it moved for); and the account's net change within the plan up to and
    # including this leg, so that the posting's balance after is the account's balance before
    # the plan plus this running change.
    account_ids: tuple[uuid.UUID, ...]
    users: tuple[uuid.UUID | None, ...]
    running_micros: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AccountChange:
    """What a plan asks of one account: ``net_micros`` (signed) added to its balance, allowed
    only when its balance before the plan is at least ``least_before_micros`` (so no guarded
    debit of the plan takes it below zero; ``ANY_BALANCE`` when none debits it)."""

    account: AccountRef
    net_micros: int
    least_before_micros: int


@dataclass(frozen=True, slots=True)
class PostingPlan:
    """Entries checked and ready to write, and what they ask of each account: written all
    together or not at all."""

    entries: list[PlannedEntry]
    # One per account the plan touches, in account-id order (the lock order).
    accounts: list[AccountChange]

    def refusal(self, before: Mapping[uuid.UUID, int]) -> InsufficientFunds | None:
        """The error naming the first leg, in plan order, that would take its guarded account
        below zero given the balances ``before`` the plan (0 for an account not created yet);
        None when the plan fits."""
        if all(before.get(c.account.id, 0) >= c.least_before_micros for c in self.accounts):
            return None
        for index, entry in enumerate(self.entries):
            for leg, account, running in zip(
                entry.legs, entry.account_ids, entry.running_micros, strict=True
            ):
                after = before.get(account, 0) + running
                if leg.amount_micros < 0 and after < 0 and guarded(leg):
                    return _insufficient_funds(leg, after - leg.amount_micros, index)
        return None  # pragma: no cover - the least balances come from these very legs

    def missing(self, existing: Mapping[uuid.UUID, int]) -> list[AccountRef]:
        """The plan's accounts not in ``existing``, in id order: to create before writing."""
        return [c.account for c in self.accounts if c.account.id not in existing]

    def posted(self, before: Mapping[uuid.UUID, int], at: datetime) -> list[PostedEntry]:
        """The entries as written, given every account's balance ``before`` the plan."""
        return [
            PostedEntry(
                entry.id,
                entry.type,
                at,
                tuple(
                    PostedLeg(leg.account, leg.amount_micros, before[account] + running)
                    for leg, account, running in zip(
                        entry.legs, entry.account_ids, entry.running_micros, strict=True
                    )
                ),
            )
            for entry in self.entries
        ]


def _insufficient_funds(leg: Leg, balance_before: int, entry_index: int) -> InsufficientFunds:
    """The refusal of ``leg``: its account, the balance it found, what it needed."""
    user = leg.account.user_id
    return InsufficientFunds(
        details={
            "account": leg.account.kind.value,
            "user_id": str(user) if user else None,
            "balance": micros_to_money(balance_before),
            "required": micros_to_money(-leg.amount_micros),
            "entry_index": entry_index,
        }
    )


def _by_account(leg: Leg) -> uuid.UUID:
    return leg.account.id


def _first(item: tuple[uuid.UUID, _Tally]) -> uuid.UUID:
    return item[0]


@dataclass(slots=True)
class _Tally:
    """An account's change so far while a plan is made (mutable, so each leg costs one lookup)."""

    account: AccountRef
    net_micros: int = 0
    least_before_micros: int = ANY_BALANCE


def plan_postings(entries: Sequence[NewEntry]) -> PostingPlan:
    """Check that every entry balances (else ``UnbalancedEntry``, before anything is written) and
    work out what the entries ask of each account, in the order given."""
    tallies: dict[uuid.UUID, _Tally] = {}
    planned = []
    for entry in entries:
        check_balanced(entry.legs)
        legs = tuple(sorted(entry.legs, key=_by_account))
        account_ids = tuple([leg.account.id for leg in legs])
        running_micros = []
        for leg, account in zip(legs, account_ids, strict=True):
            tally = tallies.get(account)
            if tally is None:
                tally = tallies[account] = _Tally(leg.account)
            running = tally.net_micros + leg.amount_micros
            tally.net_micros = running
            running_micros.append(running)
            # A guarded debit needs the balance before the plan to cover what the plan has
            # taken from the account so far, this leg included.
            if leg.amount_micros < 0 and -running > tally.least_before_micros and guarded(leg):
                tally.least_before_micros = -running
        reference = entry.reference
        planned.append(
            PlannedEntry(
                id=uuid.uuid4(),
                type=str(entry.type),
                reference_type=reference.type.value if reference else None,
                reference_id=str(reference.id)[:64] if reference else None,
                description=entry.description[:500],
                legs=legs,
                account_ids=account_ids,
                users=tuple([leg.account.user_id or leg.on_behalf_of for leg in legs]),
                running_micros=tuple(running_micros),
            )
        )
    accounts = [
        AccountChange(tally.account, tally.net_micros, tally.least_before_micros)
        for _, tally in sorted(tallies.items(), key=_first)
    ]
    return PostingPlan(planned, accounts)
