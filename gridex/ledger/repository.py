"""The ledger's SQL: writing a posting plan, and the reads (balances, history, statements, trial
balance and the verification).

Writing is the one place that knows the backends apart. PostgreSQL writes a whole plan, one entry
or an epoch's thousands, in one statement (one round trip): it locks the plan's accounts in id
order, checks each balance against the least the plan needs, and only when all fit moves the
balances and inserts every entry and posting (a small plan's rows bound as scalars, a large one's
as arrays through ``unnest``, so its text and prepared statement are the same for any size).
SQLite has no row locks and must not read before it writes (a deferred transaction that read a
snapshot cannot take the writer lock once another writer has committed), so it moves the
balances with a conditional update that takes the writer lock, undoes it on a refusal (exactly:
the lock is held), and inserts the rows with two ``executemany``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import chain
from typing import cast

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Select,
    Table,
    Uuid,
    bindparam,
    column,
    func,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import TextualSelect

from gridex.core.db import UTCDateTime, insert_or_ignore, is_postgres
from gridex.ledger.entries import ANY_BALANCE, GUARDED_KINDS, AccountRef, PostingPlan
from gridex.ledger.models import (
    USER_KINDS,
    AccountKind,
    JournalEntry,
    LedgerAccount,
    Posting,
    account_id,
)

# Guarded kinds but `available`, which a settlement charge may take below zero (a debt).
_NEVER_NEGATIVE = tuple(sorted(kind.value for kind in GUARDED_KINDS - {AccountKind.available}))


# --- writing a posting plan --------------------------------------------------------------------

_accounts = cast(Table, LedgerAccount.__table__)
_ENTRIES_INSERT = cast(Table, JournalEntry.__table__).insert()
_POSTINGS_INSERT = cast(Table, Posting.__table__).insert()
# Ids per balance read: well below the bound-variable limits of SQLite and asyncpg (32,766).
_IDS_PER_READ = 10_000


async def account_balances(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The balance in micros of each of ``ids`` that exists (no lock taken)."""
    balances: dict[uuid.UUID, int] = {}
    for start in range(0, len(ids), _IDS_PER_READ):
        rows = await session.execute(
            select(_accounts.c.id, _accounts.c.balance_micros).where(
                _accounts.c.id.in_(ids[start : start + _IDS_PER_READ])
            )
        )
        balances.update((account, int(balance)) for account, balance in rows)
    return balances


async def user_balances(session: AsyncSession, user_id: uuid.UUID) -> dict[AccountKind, int]:
    """The balance in micros of each of the user's accounts that exists."""
    kinds = {account_id(kind, user_id): kind for kind in USER_KINDS}
    balances = await account_balances(session, list(kinds))
    return {kinds[account]: balance for account, balance in balances.items()}


async def escrow_pending(session: AsyncSession, user_id: uuid.UUID, escrow_id: uuid.UUID) -> int:
    """Micros of the user's money in escrow: the sum of the escrow postings tagged with them."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Posting.amount_micros), 0)).where(
            Posting.user_id == user_id, Posting.account_id == escrow_id
        )
    )
    return int(total or 0)


async def create_accounts(session: AsyncSession, refs: Sequence[AccountRef], at: datetime) -> None:
    """Create accounts used for the first time, at zero (one created meanwhile by a concurrent
    transaction is left as it is)."""
    if not refs:
        return
    await session.execute(
        insert_or_ignore(session, _accounts),
        [
            {
                "id": ref.id,
                "kind": ref.kind.value,
                "user_id": ref.user_id,
                "balance_micros": 0,
                "created_at": at,
            }
            for ref in refs
        ],
    )


async def write_plan(
    session: AsyncSession, plan: PostingPlan, at: datetime
) -> tuple[bool, dict[uuid.UUID, int]]:
    """Write every balance move, entry and posting of ``plan`` at ``at``, or nothing.

    Returns ``(True, balances before the plan)`` when written. Else ``(False, current
    balances)``, nothing written: an account is missing (absent from the balances) or a balance
    is below what the plan needs of it, which ``plan.refusal`` tells apart.
    """
    if is_postgres(session):
        return await _write_postgres(session, plan, at)
    return await _write_sqlite(session, plan, at)


# PostgreSQL: the whole plan in one statement, read from three row sets: the plan's accounts
# (``changes``), its entries and its postings. ``locked`` locks the accounts in id order (the order
# of every money move, so no deadlock) and reads their balances, but only when all of them exist:
# else it locks nothing, so that the caller creates them holding no lock (holding one while
# waiting for another transaction's insert of the same new account inverts the order). ``fits``
# runs before anything moves (a one-time condition of each write below): every account is locked
# and its balance is at least what the plan needs. A posting names its account by its position
# in the plan; its balance after is that account's locked balance plus the posting's running
# change. Postings reference entries inserted by a sibling CTE: foreign keys are checked at the
# end of the statement, and the deferred trigger that refuses an unbalanced entry runs at commit.
_PG_WRITE = (
    "WITH changes(id, net, least_before, position) AS MATERIALIZED ({changes}), "
    "locked AS MATERIALIZED (SELECT a.id, a.balance_micros FROM ledger_accounts a "
    "WHERE a.id IN (SELECT id FROM changes) AND (SELECT count(*) FROM ledger_accounts b "
    "WHERE b.id IN (SELECT id FROM changes)) = (SELECT count(*) FROM changes) "
    "ORDER BY a.id FOR UPDATE), "
    "fits AS MATERIALIZED (SELECT count(*) = (SELECT count(*) FROM changes) AS ok, "
    "array_agg(changes.id ORDER BY changes.position) AS ids, "
    "array_agg(locked.balance_micros ORDER BY changes.position) AS before "
    "FROM locked JOIN changes ON changes.id = locked.id "
    "WHERE locked.balance_micros >= changes.least_before), "
    "moved AS (UPDATE ledger_accounts "
    "SET balance_micros = ledger_accounts.balance_micros + changes.net "
    "FROM changes WHERE ledger_accounts.id = changes.id AND changes.net <> 0 "
    "AND (SELECT ok FROM fits)), "
    "entries AS (INSERT INTO ledger_entries "
    "(id, type, reference_type, reference_id, description, created_at) "
    "SELECT e.id, e.type, e.reference_type, e.reference_id, e.description, "
    "CAST(:at AS TIMESTAMP WITH TIME ZONE) "
    "FROM ({entries}) AS e(id, type, reference_type, reference_id, description) "
    "WHERE (SELECT ok FROM fits)), "
    "posted AS (INSERT INTO ledger_postings "
    "(id, entry_id, account_id, user_id, amount_micros, balance_after_micros, created_at) "
    "SELECT gen_random_uuid(), p.entry_id, (SELECT ids FROM fits)[p.position], p.user_id, "
    "p.amount, (SELECT before FROM fits)[p.position] + p.running, "
    "CAST(:at AS TIMESTAMP WITH TIME ZONE) "
    "FROM ({postings}) AS p(entry_id, position, user_id, amount, running) "
    "WHERE (SELECT ok FROM fits)) "
    "SELECT locked.id, locked.balance_micros, (SELECT ok FROM fits) AS written FROM locked"
)
# The columns of the three row sets, with their SQL types.
_Columns = tuple[tuple[str, str], ...]
_CHANGE_COLUMNS: _Columns = (
    ("id", "UUID"),
    ("net", "BIGINT"),
    ("least_before", "BIGINT"),
    ("position", "INTEGER"),
)
_ENTRY_COLUMNS: _Columns = (
    ("id", "UUID"),
    ("type", "VARCHAR"),
    ("reference_type", "VARCHAR"),
    ("reference_id", "VARCHAR"),
    ("description", "VARCHAR"),
)
_POSTING_COLUMNS: _Columns = (
    ("entry_id", "UUID"),
    ("position", "INTEGER"),
    ("user_id", "UUID"),
    ("amount", "BIGINT"),
    ("running", "BIGINT"),
)
_ROW_SETS = (("change", _CHANGE_COLUMNS), ("entry", _ENTRY_COLUMNS), ("posting", _POSTING_COLUMNS))
# Up to this many postings the rows are bound as scalars (``VALUES``, one cached statement per
# shape); beyond, as one array per column (``unnest``, one statement for any size). Scalars spare
# asyncpg's array encoding: for a single transfer, about 80 us of client CPU of some 400 (a
# quarter more transfers per second, measured on the shared 2-core machine).
_SCALAR_POSTINGS = 8


def _scalar_name(prefix: str, column: str, row: int) -> str:
    return f"{prefix}_{column}_{row}"


@lru_cache(maxsize=64)
def _scalar_names(shape: tuple[int, int, int]) -> tuple[str, ...]:
    """The parameter names of ``shape``'s rows bound as scalars, in the order of their values
    row after row."""
    return tuple(
        _scalar_name(prefix, name, i)
        for (prefix, columns), count in zip(_ROW_SETS, shape, strict=True)
        for i in range(count)
        for name, _ in columns
    )


@lru_cache(maxsize=64)
def _pg_write_sql(shape: tuple[int, int, int] | None) -> TextualSelect:
    """The write statement for ``shape`` (accounts, entries, postings) bound as scalars, or for
    arrays when None; cached, so each text is built once."""
    sources = []
    for (prefix, columns), count in zip(_ROW_SETS, shape or (None, None, None), strict=True):
        if count is None:
            arrays = (f"CAST(:{prefix}_{name} AS {sql_type}[])" for name, sql_type in columns)
            sources.append(f"SELECT * FROM unnest({', '.join(arrays)})")
        else:
            rows = (
                ", ".join(
                    f"CAST(:{_scalar_name(prefix, name, i)} AS {sql_type})"
                    for name, sql_type in columns
                )
                for i in range(count)
            )
            sources.append("VALUES " + ", ".join(f"({row})" for row in rows))
    changes, entries, postings = sources
    return (
        text(_PG_WRITE.format(changes=changes, entries=entries, postings=postings))
        .bindparams(bindparam("at", type_=UTCDateTime()))
        .columns(
            column("id", Uuid), column("balance_micros", BigInteger), column("written", Boolean)
        )
    )


_Rows = list[tuple[object, ...]]


def _pg_rows(plan: PostingPlan) -> tuple[_Rows, _Rows, _Rows]:
    """The plan's rows for :data:`_ROW_SETS`: its accounts, entries and postings."""
    position = {change.account.id: i for i, change in enumerate(plan.accounts, start=1)}
    changes: _Rows = [
        (change.account.id, change.net_micros, change.least_before_micros, index)
        for change, index in zip(plan.accounts, position.values(), strict=True)
    ]
    entries: _Rows = [
        (e.id, e.type, e.reference_type, e.reference_id, e.description) for e in plan.entries
    ]
    postings: _Rows = [
        (e.id, position[account], user, leg.amount_micros, running)
        for e in plan.entries
        for leg, account, user, running in zip(
            e.legs, e.account_ids, e.users, e.running_micros, strict=True
        )
    ]
    return changes, entries, postings


async def _write_postgres(
    session: AsyncSession, plan: PostingPlan, at: datetime
) -> tuple[bool, dict[uuid.UUID, int]]:
    row_sets = changes, entries, postings = _pg_rows(plan)
    params: dict[str, object]
    if len(postings) <= _SCALAR_POSTINGS:
        shape = (len(changes), len(entries), len(postings))
        values = chain.from_iterable(chain(changes, entries, postings))
        params = dict(zip(_scalar_names(shape), values, strict=True))
        statement = _pg_write_sql(shape)
    else:
        params = {
            f"{prefix}_{name}": [row[index] for row in rows]
            for (prefix, columns), rows in zip(_ROW_SETS, row_sets, strict=True)
            for index, (name, _) in enumerate(columns)
        }
        statement = _pg_write_sql(None)
    params["at"] = at
    # On the session's connection: a text statement needs none of the ORM's execution steps.
    connection = await session.connection()
    result = (await connection.execute(statement, params)).all()
    if not result:  # an account is missing: nothing locked, read what exists
        ids = [change.account.id for change in plan.accounts]
        return False, await account_balances(session, ids)
    return bool(result[0].written), {account: int(balance) for account, balance, _ in result}


# SQLite: adds ``net`` to every account whose balance is at least ``least_before``, rows passed
# as one JSON parameter of (id hex, net, least_before): no limit on the number of bound variables.
_SQLITE_MOVE = text(
    "WITH c(id, net, least_before) AS (SELECT json_extract(value, '$[0]'), "
    "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(:changes)) "
    "UPDATE ledger_accounts SET balance_micros = ledger_accounts.balance_micros + c.net "
    "FROM c WHERE ledger_accounts.id = c.id AND ledger_accounts.balance_micros >= c.least_before "
    "RETURNING id, balance_micros"
).columns(column("id", Uuid), column("balance_micros", BigInteger))


async def _sqlite_move(
    session: AsyncSession, changes: list[tuple[uuid.UUID, int, int]]
) -> dict[uuid.UUID, int]:
    """Move every (account, net, least before) that fits; returns the new balances of those."""
    encoded = orjson.dumps([[account.hex, net, least] for account, net, least in changes])
    connection = await session.connection()
    result = await connection.execute(_SQLITE_MOVE, {"changes": encoded.decode()})
    return {account: int(balance) for account, balance in result.all()}


async def _write_sqlite(
    session: AsyncSession, plan: PostingPlan, at: datetime
) -> tuple[bool, dict[uuid.UUID, int]]:
    changes = [(c.account.id, c.net_micros, c.least_before_micros) for c in plan.accounts]
    after = await _sqlite_move(session, changes)
    if len(after) == len(changes):
        before = {account: after[account] - net for account, net, _ in changes}
        await _sqlite_insert(session, plan, before, at)
        return True, before
    if after:
        await _sqlite_move(
            session,
            [(account, -net, ANY_BALANCE) for account, net, _ in changes if account in after],
        )
    # The move holds the writer lock now: these balances are the truth until commit.
    return False, await account_balances(session, [account for account, _, _ in changes])


async def _sqlite_insert(
    session: AsyncSession, plan: PostingPlan, before: dict[uuid.UUID, int], at: datetime
) -> None:
    # executemany: SQLite's own loop over the rows (passing them as JSON to one INSERT ... SELECT
    # measured no faster; the indexes and foreign keys are the cost).
    await session.execute(
        _ENTRIES_INSERT,
        [
            {
                "id": e.id,
                "type": e.type,
                "reference_type": e.reference_type,
                "reference_id": e.reference_id,
                "description": e.description,
                "created_at": at,
            }
            for e in plan.entries
        ],
    )
    await session.execute(
        _POSTINGS_INSERT,
        [
            {
                "id": uuid.uuid4(),
                "entry_id": e.id,
                "account_id": account,
                "user_id": user,
                "amount_micros": leg.amount_micros,
                "balance_after_micros": before[account] + running,
                "created_at": at,
            }
            for e in plan.entries
            for leg, account, user, running in zip(
                e.legs, e.account_ids, e.users, e.running_micros, strict=True
            )
        ],
    )


def history_query(
    user_id: uuid.UUID,
    *,
    entry_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[JournalEntry]:
    """Entries that move the user's own money (``available`` or ``reserved``), newest first.
    Entries whose only link to the user is a platform leg on their behalf are left out: the
    payout of a trade empties its buyer's escrow, but the buyer's wallet does not change."""
    touching = (
        select(Posting.entry_id)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(Posting.user_id == user_id, LedgerAccount.kind.in_(USER_KINDS))
    )
    if since is not None:
        touching = touching.where(Posting.created_at >= since)
    if until is not None:
        touching = touching.where(Posting.created_at < until)
    query = select(JournalEntry).where(JournalEntry.id.in_(touching))
    if entry_type:
        query = query.where(JournalEntry.type == entry_type)
    return query.order_by(JournalEntry.created_at.desc(), JournalEntry.id)


async def postings_of(
    session: AsyncSession, user_id: uuid.UUID, entry_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[Posting, str]]]:
    """The user's postings of the given entries, with each account's kind."""
    if not entry_ids:
        return {}
    rows = await session.execute(
        select(Posting, LedgerAccount.kind)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(Posting.entry_id.in_(entry_ids), Posting.user_id == user_id)
        .order_by(LedgerAccount.kind)
    )
    result: dict[uuid.UUID, list[tuple[Posting, str]]] = defaultdict(list)
    for posting, kind in rows:
        result[posting.entry_id].append((posting, kind))
    return result


# --- statements ----------------------------------------------------------------------------


@dataclass
class Movement:
    """One entry's net change (signed micros) of the user's ``available`` and ``reserved``."""

    entry_id: uuid.UUID
    type: str
    description: str
    at: datetime
    available_micros: int = 0
    reserved_micros: int = 0


@dataclass
class DailyStatement:
    """One UTC day: balances in micros by account kind at its start (``opening``) and end
    (``closing``); opening plus the movements is closing."""

    day: date
    opening: dict[str, int]
    closing: dict[str, int]
    movements: list[Movement] = field(default_factory=list)


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time.min, tzinfo=UTC)


async def daily_statements(
    session: AsyncSession, user_id: uuid.UUID, first: date, last: date
) -> list[DailyStatement]:
    """One statement per UTC day from ``first`` to ``last``: each day's closing balances are the
    next day's opening, and opening + movements = closing, for ``available`` and ``reserved``."""
    kinds = {
        account_id(AccountKind.available, user_id): AccountKind.available.value,
        account_id(AccountKind.reserved, user_id): AccountKind.reserved.value,
    }
    start, end = day_start(first), day_start(last + timedelta(days=1))
    opening_rows = await session.execute(
        select(Posting.account_id, func.sum(Posting.amount_micros))
        .where(Posting.account_id.in_(kinds), Posting.created_at < start)
        .group_by(Posting.account_id)
    )
    balance = {kind: 0 for kind in kinds.values()}
    for acc, opening_sum in opening_rows:
        balance[kinds[acc]] = int(opening_sum or 0)
    rows = await session.execute(
        select(Posting.account_id, Posting.amount_micros, JournalEntry)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            Posting.account_id.in_(kinds),
            Posting.created_at >= start,
            Posting.created_at < end,
        )
        .order_by(Posting.created_at, JournalEntry.id)
    )
    per_day: dict[date, dict[uuid.UUID, Movement]] = defaultdict(dict)
    for acc, amount, entry in rows:
        of_day = per_day[entry.created_at.date()]
        movement = of_day.get(entry.id)
        if movement is None:
            movement = of_day[entry.id] = Movement(
                entry.id, entry.type, entry.description, entry.created_at
            )
        if kinds[acc] == AccountKind.available.value:
            movement.available_micros += amount
        else:
            movement.reserved_micros += amount
    statements = []
    day = first
    while day <= last:
        movements = list(per_day.get(day, {}).values())
        opening = dict(balance)
        for movement in movements:
            balance[AccountKind.available.value] += movement.available_micros
            balance[AccountKind.reserved.value] += movement.reserved_micros
        statements.append(DailyStatement(day, opening, dict(balance), movements))
        day += timedelta(days=1)
    return statements


# --- trial balance and verification ----------------------------------------------------------


async def all_accounts(session: AsyncSession) -> list[LedgerAccount]:
    """Every account: the platform's first, then each user's by kind."""
    rows = await session.scalars(
        select(LedgerAccount).order_by(
            LedgerAccount.user_id.is_not(None), LedgerAccount.user_id, LedgerAccount.kind
        )
    )
    return list(rows)


@dataclass
class VerifyReport:
    """What ``verify`` counted and found; ``trial_balance_micros`` (the sum of every balance)
    must be 0, and ``problems`` empty."""

    accounts: int = 0
    entries: int = 0
    postings: int = 0
    trial_balance_micros: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# The checks of ``verify``, in order, for a progress display.
VERIFY_STEPS = (
    "counting",
    "balances against postings",
    "entries sum to zero",
    "entries with postings",
    "no zero postings",
    "no negative balances",
    "trial balance",
)


async def verify(
    session: AsyncSession, progress: Callable[[str], None] | None = None
) -> VerifyReport:
    """Recompute every balance from the postings and check every invariant of the ledger;
    ``progress`` is told each of ``VERIFY_STEPS`` as it is done."""
    done = progress or (lambda _: None)
    report = VerifyReport()
    report.accounts = int(
        await session.scalar(select(func.count()).select_from(LedgerAccount)) or 0
    )
    report.entries = int(await session.scalar(select(func.count()).select_from(JournalEntry)) or 0)
    report.postings = int(await session.scalar(select(func.count()).select_from(Posting)) or 0)
    done(VERIFY_STEPS[0])

    sums = (
        select(Posting.account_id, func.sum(Posting.amount_micros).label("total"))
        .group_by(Posting.account_id)
        .subquery()
    )
    mismatched = await session.execute(
        select(
            LedgerAccount.id,
            LedgerAccount.kind,
            LedgerAccount.user_id,
            LedgerAccount.balance_micros,
            func.coalesce(sums.c.total, 0),
        )
        .outerjoin(sums, sums.c.account_id == LedgerAccount.id)
        .where(LedgerAccount.balance_micros != func.coalesce(sums.c.total, 0))
    )
    for acc, kind, user, stored, computed in mismatched:
        report.problems.append(
            f"account {acc} ({kind}, user {user}): stored {stored} != sum of postings {computed}"
        )
    done(VERIFY_STEPS[1])

    unbalanced = await session.execute(
        select(Posting.entry_id, func.sum(Posting.amount_micros), func.count())
        .group_by(Posting.entry_id)
        .having((func.sum(Posting.amount_micros) != 0) | (func.count() < 2))
    )
    for entry, entry_sum, count in unbalanced:
        report.problems.append(f"entry {entry}: {count} postings summing to {entry_sum}")
    done(VERIFY_STEPS[2])

    empty = await session.scalars(
        select(JournalEntry.id).where(~JournalEntry.id.in_(select(Posting.entry_id)))
    )
    for entry in empty:
        report.problems.append(f"entry {entry}: no postings")
    done(VERIFY_STEPS[3])

    zero = await session.scalars(select(Posting.id).where(Posting.amount_micros == 0))
    for posting in zero:
        report.problems.append(f"posting {posting}: amount is zero")
    done(VERIFY_STEPS[4])

    negative = await session.execute(
        select(LedgerAccount.id, LedgerAccount.kind, LedgerAccount.balance_micros).where(
            LedgerAccount.kind.in_(_NEVER_NEGATIVE), LedgerAccount.balance_micros < 0
        )
    )
    for acc, kind, stored in negative:
        report.problems.append(f"account {acc} ({kind}): negative balance {stored}")
    done(VERIFY_STEPS[5])

    total = await session.scalar(select(func.coalesce(func.sum(LedgerAccount.balance_micros), 0)))
    report.trial_balance_micros = int(total or 0)
    if report.trial_balance_micros != 0:
        report.problems.append(f"trial balance is {report.trial_balance_micros}, not 0")
    postings_total = await session.scalar(select(func.coalesce(func.sum(Posting.amount_micros), 0)))
    if int(postings_total or 0) != 0:
        report.problems.append(f"sum of all postings is {postings_total}, not 0")
    done(VERIFY_STEPS[6])
    return report
