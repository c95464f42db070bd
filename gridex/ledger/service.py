"""The ledger's service API, used by every module that moves money.

Every function runs inside the caller's unit of work (it only executes and flushes; the caller
commits), so an order and its reservation, or a trade and its capture, commit together or not at
all. All amounts are positive integer micros; the direction is in the function's name.

Every entry passes through :func:`post_entry`, which checks that it balances and applies each leg
with one conditional update per account (``balance + amount >= 0`` for guarded accounts). The
update takes the row lock on PostgreSQL and the database write lock on SQLite, so two requests
racing for the last funds cannot both win on either backend. On PostgreSQL that update, the entry
and its postings are one statement (one round trip per entry); SQLite takes three.

:func:`post_entries` (and :func:`transfer_many`) post many entries, all or nothing, in a constant
number of statements (``gridex.ledger.batch``): how clearing and settlement post an epoch.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import cast

from sqlalchemy import BigInteger, Insert, Table, Uuid, bindparam, column, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import TextualSelect

from gridex.core.db import UTCDateTime
from gridex.core.errors import ValidationFailed
from gridex.core.pagination import Page, PageParams, paginate
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.ledger import repository
from gridex.ledger.errors import InsufficientFunds, OutstandingDebt, UnbalancedEntry
from gridex.ledger.models import (
    PLATFORM_KINDS,
    USER_KINDS,
    AccountKind,
    EntryType,
    JournalEntry,
    LedgerAccount,
    Posting,
    ReferenceType,
    account_id,
)
from gridex.ledger.schemas import (
    BalancesOut,
    MovementOut,
    PostingOut,
    StatementOut,
    TransactionOut,
    TrialBalanceAccountOut,
    TrialBalanceOut,
    WalletOut,
)
from gridex.users.models import User

# Accounts that never go below zero. `available` may only through `allow_debt` (a settlement
# charge); `deposits` and `grid` are counterparts of money outside the ledger and go negative.
_GUARDED = frozenset(
    {
        AccountKind.available,
        AccountKind.reserved,
        AccountKind.escrow,
        AccountKind.fees,
        AccountKind.payouts,
    }
)
_accounts = cast(Table, LedgerAccount.__table__)
_entries = cast(Table, JournalEntry.__table__)
_postings = cast(Table, Posting.__table__)


@dataclass(frozen=True, slots=True)
class AccountRef:
    kind: AccountKind
    user_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if (self.user_id is None) != (self.kind in PLATFORM_KINDS):
            raise ValueError(f"account kind {self.kind} with user_id={self.user_id}")

    @property
    def id(self) -> uuid.UUID:
        return account_id(self.kind, self.user_id)


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
    ``allow_debt`` lets this debit take a user's ``available`` below zero (a settlement charge,
    DESIGN.md section 6); no other account may be given it.
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
    type: ReferenceType
    id: object


@dataclass(frozen=True, slots=True)
class PostedLeg:
    account: AccountRef
    amount_micros: int
    balance_after_micros: int


@dataclass(frozen=True, slots=True)
class PostedEntry:
    id: uuid.UUID
    type: str
    created_at: datetime
    legs: tuple[PostedLeg, ...]


def check_balanced(legs: Sequence[Leg]) -> None:
    """The in-code invariant every entry passes (PostgreSQL also checks it in a trigger)."""
    if len(legs) < 2:
        raise UnbalancedEntry("an entry needs at least two postings")
    for leg in legs:
        if type(leg.amount_micros) is not int or leg.amount_micros == 0:
            raise UnbalancedEntry(f"posting amount must be a non-zero int: {leg.amount_micros!r}")
    if sum(leg.amount_micros for leg in legs) != 0:
        raise UnbalancedEntry("postings do not sum to zero")


def _positive(amount_micros: int) -> int:
    if type(amount_micros) is not int or amount_micros <= 0:
        raise ValueError(f"amount must be a positive int of micros, got {amount_micros!r}")
    return amount_micros


@lru_cache(maxsize=4)
def _ensure_sql(dialect: str) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` of an account, built once per dialect (cached)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_accounts).on_conflict_do_nothing()


async def _ensure_account(session: AsyncSession, account: AccountRef, at: datetime) -> None:
    values = {
        "id": account.id,
        "kind": account.kind.value,
        "user_id": account.user_id,
        "balance_micros": 0,
        "created_at": at,
    }
    await session.execute(_ensure_sql(session.get_bind().dialect.name), values)


# Floor of an unguarded leg: any balance passes.
_NO_FLOOR = -(2**62)


def guarded(leg: Leg, allow_debt: bool = False) -> bool:
    """Whether ``leg`` may not take its account below zero (if it is a debit): a guarded kind,
    unless it is a user's ``available`` with debt allowed (by the leg or its whole entry)."""
    kind = leg.account.kind
    debt = (allow_debt or leg.allow_debt) and kind is AccountKind.available
    return kind in _GUARDED and not debt


def _floor(leg: Leg, allow_debt: bool) -> int:
    """The least balance a leg may leave: 0 for a debit of a guarded account."""
    return 0 if leg.amount_micros < 0 and guarded(leg, allow_debt) else _NO_FLOOR


@lru_cache(maxsize=64)
def _update_sql(legs: int, dialect: str) -> TextualSelect:
    """``UPDATE ... FROM (VALUES ...)`` for ``legs`` accounts, as cached text: one statement
    moves every balance, each only if ``balance + amount >= floor``."""
    pg = dialect == "postgresql"
    cast_id, cast_int = ("CAST({} AS UUID)", "CAST({} AS BIGINT)") if pg else ("{}", "{}")
    rows = ", ".join(
        f"({cast_id.format(f':id{i}')}, {cast_int.format(f':amount{i}')}, "
        f"{cast_int.format(f':floor{i}')})"
        for i in range(legs)
    )
    returning = "ledger_accounts.id, ledger_accounts.balance_micros" if pg else "id, balance_micros"
    return (
        text(
            f"WITH changes(id, amount, floor) AS (VALUES {rows}) "
            "UPDATE ledger_accounts "
            "SET balance_micros = ledger_accounts.balance_micros + changes.amount "
            "FROM changes WHERE ledger_accounts.id = changes.id "
            "AND ledger_accounts.balance_micros + changes.amount >= changes.floor "
            f"RETURNING {returning}"
        )
        .bindparams(*(bindparam(f"id{i}", type_=Uuid) for i in range(legs)))
        .columns(column("id", Uuid), column("balance_micros", BigInteger))
    )


async def _update(
    session: AsyncSession, rows: list[tuple[uuid.UUID, int, int]]
) -> dict[uuid.UUID, int]:
    """One conditional UPDATE of every account in ``rows`` (id, amount, floor); returns the new
    balances of the rows it changed (those whose balance + amount stays >= floor)."""
    params: dict[str, object] = {}
    for i, (account, amount, floor) in enumerate(rows):
        params[f"id{i}"], params[f"amount{i}"], params[f"floor{i}"] = account, amount, floor
    statement = _update_sql(len(rows), session.get_bind().dialect.name)
    connection = await session.connection()
    result = await connection.execute(statement, params)
    return {account: int(balance) for account, balance in result.all()}


@dataclass(frozen=True, slots=True)
class _Record:
    """The rows of one entry: written by the same statement as the balances on PostgreSQL."""

    entry_id: uuid.UUID
    type: str
    reference_type: str | None
    reference_id: str | None
    description: str
    at: datetime
    # Per leg, in the order of the legs: the posting's id and its user.
    postings: tuple[tuple[uuid.UUID, uuid.UUID | None], ...]


@lru_cache(maxsize=64)
def _post_sql(legs: int) -> TextualSelect:
    """PostgreSQL: one statement per entry, as cached text. It first locks the accounts in id
    order (``locked``, a constant condition of the update, so the planner evaluates it once before
    the update reads a row: the update's own join order depends on the plan, and two plans that
    lock in different orders deadlock). When an account does not exist yet it locks and moves
    nothing, so that the caller creates it holding no lock (holding one while waiting for another
    transaction's insert of that account is a lock-order inversion too). Then it moves every
    balance like :func:`_update_sql` (each only if ``balance + amount >= floor``) and, only when
    every leg
    moved, inserts the entry and its postings with their balances after (data-modifying CTEs see
    each other's RETURNING; foreign keys are checked at the end of the statement). It returns the
    balances it changed: fewer rows than legs means nothing was inserted."""
    rows = ", ".join(
        f"(CAST(:id{i} AS UUID), CAST(:amount{i} AS BIGINT), CAST(:floor{i} AS BIGINT), "
        f"CAST(:posting{i} AS UUID), CAST(:user{i} AS UUID))"
        for i in range(legs)
    )
    return (
        text(
            f"WITH changes(id, amount, floor, posting_id, user_id) AS (VALUES {rows}), "
            "locked AS (SELECT a.id FROM ledger_accounts a "
            "WHERE a.id IN (SELECT id FROM changes) AND (SELECT count(*) FROM ledger_accounts b "
            f"WHERE b.id IN (SELECT id FROM changes)) = {legs} ORDER BY a.id FOR UPDATE), "
            "moved AS (UPDATE ledger_accounts "
            "SET balance_micros = ledger_accounts.balance_micros + changes.amount "
            "FROM changes WHERE ledger_accounts.id = changes.id "
            "AND ledger_accounts.balance_micros + changes.amount >= changes.floor "
            f"AND (SELECT count(*) FROM locked) = {legs} "
            "RETURNING ledger_accounts.id, ledger_accounts.balance_micros), "
            "entry AS (INSERT INTO ledger_entries "
            "(id, type, reference_type, reference_id, description, created_at) "
            "SELECT CAST(:entry_id AS UUID), CAST(:type AS VARCHAR), "
            "CAST(:reference_type AS VARCHAR), CAST(:reference_id AS VARCHAR), "
            "CAST(:description AS VARCHAR), CAST(:at AS TIMESTAMP WITH TIME ZONE) "
            f"WHERE (SELECT count(*) FROM moved) = {legs} RETURNING id, created_at), "
            "posted AS (INSERT INTO ledger_postings (id, entry_id, account_id, user_id, "
            "amount_micros, balance_after_micros, created_at) "
            "SELECT changes.posting_id, entry.id, changes.id, changes.user_id, changes.amount, "
            "moved.balance_micros, entry.created_at "
            "FROM changes JOIN moved ON moved.id = changes.id CROSS JOIN entry) "
            "SELECT moved.id, moved.balance_micros FROM moved"
        )
        .bindparams(
            *(bindparam(f"id{i}", type_=Uuid) for i in range(legs)),
            *(bindparam(f"posting{i}", type_=Uuid) for i in range(legs)),
            *(bindparam(f"user{i}", type_=Uuid) for i in range(legs)),
            bindparam("entry_id", type_=Uuid),
            bindparam("at", type_=UTCDateTime()),
        )
        .columns(column("id", Uuid), column("balance_micros", BigInteger))
    )


async def _post(
    session: AsyncSession, rows: list[tuple[uuid.UUID, int, int]], record: _Record
) -> dict[uuid.UUID, int]:
    """:func:`_update` that also records the entry when every row moved (PostgreSQL)."""
    params: dict[str, object] = {
        "entry_id": record.entry_id,
        "type": record.type,
        "reference_type": record.reference_type,
        "reference_id": record.reference_id,
        "description": record.description,
        "at": record.at,
    }
    for i, ((account, amount, floor), (posting, user)) in enumerate(
        zip(rows, record.postings, strict=True)
    ):
        params[f"id{i}"], params[f"amount{i}"], params[f"floor{i}"] = account, amount, floor
        params[f"posting{i}"], params[f"user{i}"] = posting, user
    # On the session's connection: a text statement needs none of the ORM's execution steps.
    connection = await session.connection()
    result = await connection.execute(_post_sql(len(rows)), params)
    return {account: int(balance) for account, balance in result.all()}


async def _apply_all(
    session: AsyncSession,
    legs: Sequence[Leg],
    at: datetime,
    *,
    allow_debt: bool,
    record: _Record | None = None,
) -> list[int]:
    """Apply every leg of distinct accounts, all or nothing; returns each leg's balance after.

    The common case is one statement (which also records the entry when ``record`` is given).
    When a leg fails its floor, the legs already applied are undone in the same transaction (we
    hold their row locks, so the undo is exact) before ``InsufficientFunds`` is raised: a caller
    that catches it may go on.
    """
    ids = [leg.account.id for leg in legs]
    rows = [(leg.account.id, leg.amount_micros, _floor(leg, allow_debt)) for leg in legs]
    for _ in range(3):
        if record is None:
            balances = await _update(session, rows)
        else:
            balances = await _post(session, rows, record)
        if len(balances) == len(rows):
            return [balances[account] for account in ids]
        if balances:
            await _update(
                session, [(a, -amount, _NO_FLOOR) for a, amount, _ in rows if a in balances]
            )
        # A leg was left out because its balance is too low, or because its account did not
        # exist in the statement's snapshot (not created yet, or created by a concurrent
        # transaction that committed meanwhile): create what is missing and try again.
        for leg, (account, amount, floor) in zip(legs, rows, strict=True):
            if account in balances:
                continue
            current = await session.scalar(
                select(_accounts.c.balance_micros).where(_accounts.c.id == account)
            )
            if floor != _NO_FLOOR and (current or 0) + amount < floor:
                raise await _insufficient(session, leg)
            if current is None:
                await _ensure_account(session, leg.account, at)
    raise await _insufficient(session, legs[0])


async def _apply_each(
    session: AsyncSession, legs: Sequence[Leg], at: datetime, *, allow_debt: bool
) -> list[int]:
    """Legs that touch one account twice: one update per leg, undone on failure."""
    applied: list[Leg] = []
    result = []
    for leg in legs:
        row = (leg.account.id, leg.amount_micros, _floor(leg, allow_debt))
        balances = await _update(session, [row])
        if not balances:
            exists = await session.scalar(
                select(_accounts.c.id).where(_accounts.c.id == leg.account.id)
            )
            if exists is None and row[2] == _NO_FLOOR:
                await _ensure_account(session, leg.account, at)
                balances = await _update(session, [row])
        if not balances:
            for done in reversed(applied):
                await _update(session, [(done.account.id, -done.amount_micros, _NO_FLOOR)])
            raise await _insufficient(session, leg)
        applied.append(leg)
        result.append(balances[leg.account.id])
    return result


async def _insufficient(session: AsyncSession, leg: Leg) -> InsufficientFunds:
    current = await balance_of(session, leg.account)
    return InsufficientFunds(
        details={
            "account": leg.account.kind.value,
            "balance": _money(current),
            "required": _money(-leg.amount_micros),
        }
    )


def _money(micros: int) -> str:
    return micros_to_money(micros)


def entry_record_fields(
    type: EntryType | str, description: str, reference: Reference | None
) -> tuple[str, str | None, str | None, str]:
    """An entry's stored ``type``, ``reference_type``, ``reference_id`` and ``description``
    (the reference id and description cut to their column sizes), the same for every path."""
    return (
        str(type),
        reference.type.value if reference else None,
        str(reference.id)[:64] if reference else None,
        description[:500],
    )


_ENTRY_INSERT = _entries.insert()
_POSTINGS_INSERT = _postings.insert()


async def _insert_entry(
    session: AsyncSession, record: _Record, legs: Sequence[Leg], after: Sequence[int]
) -> None:
    """The entry and its postings as two statements (SQLite, and legs sharing an account)."""
    await session.execute(
        _ENTRY_INSERT,
        {
            "id": record.entry_id,
            "type": record.type,
            "reference_type": record.reference_type,
            "reference_id": record.reference_id,
            "description": record.description,
            "created_at": record.at,
        },
    )
    await session.execute(
        _POSTINGS_INSERT,
        [
            {
                "id": posting,
                "entry_id": record.entry_id,
                "account_id": leg.account.id,
                "user_id": user,
                "amount_micros": leg.amount_micros,
                "balance_after_micros": balance,
                "created_at": record.at,
            }
            for leg, (posting, user), balance in zip(legs, record.postings, after, strict=True)
        ],
    )


async def post_entry(
    session: AsyncSession,
    *,
    at: datetime,
    type: EntryType | str,
    legs: Sequence[Leg],
    description: str,
    reference: Reference | None = None,
    allow_debt: bool = False,
) -> PostedEntry:
    """Record one balanced journal entry and update the balances of its accounts.

    Raises ``InsufficientFunds`` (and changes nothing: the caller's unit of work rolls back) when
    a guarded account would go below zero. ``allow_debt`` lets a user's ``available`` go negative
    and is only for settlement charges (DESIGN.md section 6).
    """
    check_balanced(legs)
    # One lock order for every transaction: no deadlock between two entries on the same accounts.
    ordered = sorted(legs, key=lambda leg: leg.account.id)
    entry_type, reference_type, reference_id, text_ = entry_record_fields(
        type, description, reference
    )
    record = _Record(
        entry_id=uuid.uuid4(),
        type=entry_type,
        reference_type=reference_type,
        reference_id=reference_id,
        description=text_,
        at=at,
        postings=tuple((uuid.uuid4(), leg.account.user_id or leg.on_behalf_of) for leg in ordered),
    )
    distinct = len({leg.account.id for leg in ordered}) == len(ordered)
    if distinct and session.get_bind().dialect.name == "postgresql":
        # One round trip: balances, entry and postings in one statement.
        after = await _apply_all(session, ordered, at, allow_debt=allow_debt, record=record)
    else:
        if distinct:
            after = await _apply_all(session, ordered, at, allow_debt=allow_debt)
        else:
            after = await _apply_each(session, ordered, at, allow_debt=allow_debt)
        await _insert_entry(session, record, ordered, after)
    posted = [
        PostedLeg(leg.account, leg.amount_micros, balance)
        for leg, balance in zip(ordered, after, strict=True)
    ]
    return PostedEntry(record.entry_id, record.type, at, tuple(posted))


@dataclass(frozen=True, slots=True)
class NewEntry:
    """One balanced entry of a batch for :func:`post_entries` (``allow_debt`` is per leg)."""

    type: EntryType | str
    legs: Sequence[Leg]
    description: str = ""
    reference: Reference | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """``amount_micros`` (positive) from ``source`` to ``destination``, as one entry of a batch
    for :func:`transfer_many`; ``allow_debt`` is that of the source leg."""

    source: AccountRef
    destination: AccountRef
    amount_micros: int
    type: EntryType | str = EntryType.transfer
    description: str = ""
    reference: Reference | None = None
    on_behalf_of: uuid.UUID | None = None
    allow_debt: bool = False

    def entry(self) -> NewEntry:
        amount = _positive(self.amount_micros)
        return NewEntry(
            self.type,
            (
                Leg(self.source, -amount, self.on_behalf_of, self.allow_debt),
                Leg(self.destination, amount, self.on_behalf_of),
            ),
            self.description,
            self.reference,
        )


async def post_entries(
    session: AsyncSession, entries: Sequence[NewEntry], *, at: datetime
) -> list[PostedEntry]:
    """Record many balanced entries at ``at`` in a constant number of statements, all or nothing.

    The entries apply in the order given, each leg as :func:`post_entry` would apply it: a debit
    of a guarded account must leave it at zero or above at that point of the batch (the batch's
    earlier entries count), unless the leg has ``allow_debt`` (a user's ``available`` only). When
    one would not, ``InsufficientFunds`` names the first such leg (``account``, ``user_id``,
    ``balance`` before it, ``required``, ``entry_index``) and nothing has changed: the caller may
    catch it and go on. Returns one ``PostedEntry`` per entry, in order, with balances after.

    Statements, whatever the batch size: PostgreSQL locks the accounts in id order and reads their
    balances (one), then moves every balance and inserts every entry and posting (one, arrays
    through ``unnest``); SQLite moves the balances conditionally (one) and inserts entries and
    postings (two ``executemany``). Creating accounts used for the first time adds a few.
    """
    from gridex.ledger import batch

    return await batch.post_entries(session, entries, at=at)


async def transfer_many(
    session: AsyncSession, transfers: Sequence[Transfer], *, at: datetime
) -> list[PostedEntry]:
    """:func:`post_entries` of two-posting entries (``source`` -> ``destination``)."""
    return await post_entries(session, [t.entry() for t in transfers], at=at)


async def transfer(
    session: AsyncSession,
    *,
    at: datetime,
    source: AccountRef,
    destination: AccountRef,
    amount_micros: int,
    type: EntryType | str = EntryType.transfer,
    description: str = "",
    reference: Reference | None = None,
    on_behalf_of: uuid.UUID | None = None,
    allow_debt: bool = False,
) -> PostedEntry:
    """Move ``amount_micros`` from ``source`` to ``destination`` (a two-posting entry)."""
    amount = _positive(amount_micros)
    return await post_entry(
        session,
        at=at,
        type=type,
        legs=[
            Leg(source, -amount, on_behalf_of),
            Leg(destination, amount, on_behalf_of),
        ],
        description=description,
        reference=reference,
        allow_debt=allow_debt,
    )


async def reserve(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    reference: Reference | None = None,
    description: str = "Reservation",
    type: EntryType | str = EntryType.order_reserve,
) -> PostedEntry:
    """Hold money for an order or a withdrawal: ``available`` -> ``reserved``.

    ``InsufficientFunds`` when ``available`` is below the amount (always so while in debt).
    """
    return await transfer(
        session,
        at=at,
        source=user_account(user_id, AccountKind.available),
        destination=user_account(user_id, AccountKind.reserved),
        amount_micros=amount_micros,
        type=type,
        description=description,
        reference=reference,
    )


async def release(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    reference: Reference | None = None,
    description: str = "Release",
    type: EntryType | str = EntryType.order_release,
) -> PostedEntry:
    """Give back a hold: ``reserved`` -> ``available``."""
    return await transfer(
        session,
        at=at,
        source=user_account(user_id, AccountKind.reserved),
        destination=user_account(user_id, AccountKind.available),
        amount_micros=amount_micros,
        type=type,
        description=description,
        reference=reference,
    )


async def capture(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    reference: Reference | None = None,
    description: str = "Trade captured into escrow",
    destination: AccountRef = ESCROW,
    type: EntryType | str = EntryType.trade_capture,
) -> PostedEntry:
    """Take held money: ``reserved`` -> ``destination`` (escrow by default), tagged with the
    user so that it counts in their ``escrow_pending`` until settlement moves it on."""
    return await transfer(
        session,
        at=at,
        source=user_account(user_id, AccountKind.reserved),
        destination=destination,
        amount_micros=amount_micros,
        type=type,
        description=description,
        reference=reference,
        on_behalf_of=user_id,
    )


async def credit(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    source: AccountRef,
    type: EntryType | str,
    description: str,
    reference: Reference | None = None,
    on_behalf_of: uuid.UUID | None = None,
) -> PostedEntry:
    """Pay a user: platform ``source`` -> the user's ``available``."""
    return await transfer(
        session,
        at=at,
        source=source,
        destination=user_account(user_id),
        amount_micros=amount_micros,
        type=type,
        description=description,
        reference=reference,
        on_behalf_of=on_behalf_of,
    )


async def debit(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    destination: AccountRef,
    type: EntryType | str,
    description: str,
    reference: Reference | None = None,
) -> PostedEntry:
    """Take from a user's ``available`` (never below zero) to platform ``destination``."""
    return await transfer(
        session,
        at=at,
        source=user_account(user_id),
        destination=destination,
        amount_micros=amount_micros,
        type=type,
        description=description,
        reference=reference,
    )


async def charge(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    destination: AccountRef = GRID,
    description: str,
    reference: Reference | None = None,
    type: EntryType | str = EntryType.settlement_charge,
) -> PostedEntry:
    """A settlement charge (delivery shortfall): the only debit that may take ``available``
    below zero; the negative balance is a debt that blocks buying and withdrawing."""
    return await transfer(
        session,
        at=at,
        source=user_account(user_id),
        destination=destination,
        amount_micros=amount_micros,
        type=type,
        description=description,
        reference=reference,
        allow_debt=True,
    )


async def balance_of(session: AsyncSession, account: AccountRef) -> int:
    """The stored balance in micros (0 for an account not created yet)."""
    value = await session.scalar(
        select(_accounts.c.balance_micros).where(_accounts.c.id == account.id)
    )
    return int(value or 0)


async def has_debt(session: AsyncSession, user_id: uuid.UUID) -> bool:
    return await balance_of(session, user_account(user_id)) < 0


async def ensure_no_debt(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Refuse new buy orders and withdrawals while ``available`` is negative."""
    balance = await balance_of(session, user_account(user_id))
    if balance < 0:
        raise OutstandingDebt(details={"available": _money(balance)})


@dataclass(frozen=True, slots=True)
class WalletBalances:
    available_micros: int
    reserved_micros: int
    escrow_pending_micros: int


async def wallet_balances(session: AsyncSession, user_id: uuid.UUID) -> WalletBalances:
    """``escrow_pending``: the user's money moved into escrow at clearing and not yet moved on by
    settlement (escrow postings tagged with the user)."""
    rows = await session.execute(
        select(_accounts.c.kind, _accounts.c.balance_micros).where(
            _accounts.c.id.in_(
                [account_id(kind, user_id) for kind in USER_KINDS],
            )
        )
    )
    balances = {kind: int(balance) for kind, balance in rows}
    escrow = await session.scalar(
        select(func.coalesce(func.sum(_postings.c.amount_micros), 0)).where(
            _postings.c.user_id == user_id, _postings.c.account_id == ESCROW.id
        )
    )
    return WalletBalances(
        available_micros=balances.get(AccountKind.available.value, 0),
        reserved_micros=balances.get(AccountKind.reserved.value, 0),
        escrow_pending_micros=int(escrow or 0),
    )


# --- wallet views (used by the routes) ---------------------------------------------------------


# The wallet's chain fields come from a later domain (the chain mirror), which the ledger must
# not import: the app puts a function of this shape in ``rt.extensions[WALLET_CHAIN_VIEW]``. It
# answers (custodial address, energy tokens in Wh or None) or None when the user has no
# custodial wallet.
WalletChainView = Callable[
    [AsyncSession, Runtime, uuid.UUID], Awaitable[tuple[str, int | None] | None]
]
WALLET_CHAIN_VIEW = "ledger.wallet_chain_view"


async def wallet(session: AsyncSession, rt: Runtime, user: User) -> WalletOut:
    balances = await wallet_balances(session, user.id)
    view = cast(WalletChainView | None, rt.extensions.get(WALLET_CHAIN_VIEW))
    on_chain = await view(session, rt, user.id) if view is not None else None
    address, energy_wh = on_chain if on_chain is not None else (None, None)
    return WalletOut(
        currency=rt.settings.currency,
        available=balances.available_micros,
        reserved=balances.reserved_micros,
        escrow_pending=balances.escrow_pending_micros,
        energy_tokens_kwh=wh_to_kwh(energy_wh) if energy_wh is not None else None,
        chain_address=address,
        linked_wallet=user.wallet_address,
    )


async def transactions(
    session: AsyncSession,
    user_id: uuid.UUID,
    page: PageParams,
    *,
    entry_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[TransactionOut]:
    """The user's ledger entries, newest first, each with the user's own postings."""
    query = repository.history_query(user_id, entry_type=entry_type, since=since, until=until)
    entries, total = await paginate(session, query, page)
    postings = await repository.postings_of(session, user_id, [e.id for e in entries])
    items = []
    for entry in entries:
        mine = postings.get(entry.id, [])
        items.append(
            TransactionOut(
                id=entry.id,
                type=entry.type,
                description=entry.description,
                reference_type=entry.reference_type,
                reference_id=entry.reference_id,
                created_at=entry.created_at,
                amount=sum(p.amount_micros for p, kind in mine if kind in USER_KINDS),
                postings=[
                    PostingOut(
                        account=kind,
                        amount=p.amount_micros,
                        # A platform account's balance is not the user's business.
                        balance_after=p.balance_after_micros if kind in USER_KINDS else None,
                    )
                    for p, kind in mine
                ],
            )
        )
    return Page.build(items, total, page)


MAX_STATEMENT_DAYS = 366


async def statements(
    session: AsyncSession, rt: Runtime, user_id: uuid.UUID, first: date, last: date
) -> list[StatementOut]:
    """Daily statements from ``first`` to ``last`` (UTC days, inclusive)."""
    if last < first:
        raise ValidationFailed("`to` is before `from`")
    if (last - first).days >= MAX_STATEMENT_DAYS:
        raise ValidationFailed(f"at most {MAX_STATEMENT_DAYS} days per request")
    days = await repository.daily_statements(session, user_id, first, last)
    out = []
    for day in days:
        movements = [
            MovementOut(
                entry_id=m.entry_id,
                type=m.type,
                description=m.description,
                at=m.at,
                available=m.available_micros,
                reserved=m.reserved_micros,
                total=m.available_micros + m.reserved_micros,
            )
            for m in day.movements
        ]
        out.append(
            StatementOut(
                date=day.day,
                currency=rt.settings.currency,
                opening=_balances(day.opening),
                closing=_balances(day.closing),
                credits=sum(m.total for m in movements if m.total > 0),
                debits=-sum(m.total for m in movements if m.total < 0),
                movements=movements,
            )
        )
    return out


def _balances(values: dict[str, int]) -> BalancesOut:
    available = values[AccountKind.available.value]
    reserved = values[AccountKind.reserved.value]
    return BalancesOut(available=available, reserved=reserved, total=available + reserved)


async def trial_balance(session: AsyncSession, rt: Runtime) -> TrialBalanceOut:
    """Every account's balance; ``total`` is zero unless the ledger is broken."""
    accounts = await repository.all_accounts(session)
    platform = {kind.value: 0 for kind in sorted(PLATFORM_KINDS)}
    per_kind = {kind.value: 0 for kind in USER_KINDS}
    for account in accounts:
        if account.user_id is None:
            platform[account.kind] = account.balance_micros
        else:
            per_kind[account.kind] += account.balance_micros
    return TrialBalanceOut(
        currency=rt.settings.currency,
        as_of=rt.clock.now(),
        accounts=[
            TrialBalanceAccountOut(
                id=a.id, kind=a.kind, user_id=a.user_id, balance=a.balance_micros
            )
            for a in accounts
        ],
        platform=platform,
        users_available=per_kind[AccountKind.available.value],
        users_reserved=per_kind[AccountKind.reserved.value],
        total=sum(a.balance_micros for a in accounts),
    )
