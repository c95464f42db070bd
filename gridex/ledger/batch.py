"""Posting a batch of entries in a constant number of statements (clearing and settlement).

The batch is planned in Python first: per account, the net change of the whole batch and the
least balance it must start from so that no guarded debit of the batch takes it below zero (each
leg is checked at its own place in the batch, as if the entries were posted one by one). Then the
balances move with one statement per account set, and the entries and postings are inserted in
bulk with the balance after each posting computed from the balance before the batch.

PostgreSQL locks the accounts first (``SELECT ... ORDER BY id FOR UPDATE``: the same global
order as every other money move, so no deadlock; accounts used for the first time are created
before, holding no lock), checks in Python, and then writes everything in one statement.

SQLite has no row locks and must not read before it writes (a deferred transaction that read a
snapshot cannot take the writer lock once another writer has committed), so it moves the
balances with a conditional update that takes the writer lock, and on a refusal undoes it
(exactly: the lock is held) and finds the leg to blame.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import orjson
from sqlalchemy import BigInteger, Table, Uuid, bindparam, column, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.db import UTCDateTime
from gridex.core.units import micros_to_money
from gridex.ledger.errors import InsufficientFunds
from gridex.ledger.models import JournalEntry, LedgerAccount, Posting
from gridex.ledger.service import (
    AccountRef,
    Leg,
    NewEntry,
    PostedEntry,
    PostedLeg,
    check_balanced,
    entry_record_fields,
    guarded,
)

_accounts = cast(Table, LedgerAccount.__table__)
_ENTRY_INSERT = cast(Table, JournalEntry.__table__).insert()
_POSTINGS_INSERT = cast(Table, Posting.__table__).insert()

# "Needs" of an account no guarded debit of the batch touches: any starting balance passes.
_ANY = -(2**62)
# Retries of the SQLite update: once to create accounts used for the first time, once more in
# case another connection created one meanwhile.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class _Planned:
    """One entry of the batch, ready to insert (legs in account-id order, as ``post_entry``)."""

    entry_id: uuid.UUID
    type: str
    reference_type: str | None
    reference_id: str | None
    description: str
    legs: tuple[Leg, ...]
    # Per leg: its account's id, the posting's user, and the account's net change within the
    # batch up to and including this leg (so balance after = balance before the batch + prefix).
    accounts: tuple[uuid.UUID, ...]
    users: tuple[uuid.UUID | None, ...]
    prefixes: tuple[int, ...]


@dataclass(slots=True)
class _Plan:
    entries: list[_Planned]
    # Per account, in first-use order: its reference, net change, and the least balance it must
    # have before the batch.
    refs: dict[uuid.UUID, AccountRef]
    net: dict[uuid.UUID, int]
    need: dict[uuid.UUID, int]


def _by_account(leg: Leg) -> uuid.UUID:
    return leg.account.id


def _ref_id(ref: AccountRef) -> uuid.UUID:
    return ref.id


def _plan(entries: Sequence[NewEntry]) -> _Plan:
    """Check every entry balances and work out what the batch asks of each account (pure)."""
    refs: dict[uuid.UUID, AccountRef] = {}
    net: dict[uuid.UUID, int] = {}
    need: dict[uuid.UUID, int] = {}
    planned = []
    for entry in entries:
        check_balanced(entry.legs)
        legs = tuple(sorted(entry.legs, key=_by_account))
        accounts = tuple(leg.account.id for leg in legs)
        prefixes = []
        for leg, account in zip(legs, accounts, strict=True):
            running = net.get(account, 0) + leg.amount_micros
            net[account] = running
            prefixes.append(running)
            if account not in refs:
                refs[account] = leg.account
                need[account] = _ANY
            if leg.amount_micros < 0 and -running > need[account] and guarded(leg):
                need[account] = -running
        entry_type, reference_type, reference_id, description = entry_record_fields(
            entry.type, entry.description, entry.reference
        )
        planned.append(
            _Planned(
                entry_id=uuid.uuid4(),
                type=entry_type,
                reference_type=reference_type,
                reference_id=reference_id,
                description=description,
                legs=legs,
                accounts=accounts,
                users=tuple(leg.account.user_id or leg.on_behalf_of for leg in legs),
                prefixes=tuple(prefixes),
            )
        )
    return _Plan(planned, refs, net, need)


def _refusal(plan: _Plan, before: dict[uuid.UUID, int]) -> InsufficientFunds | None:
    """The error naming the first leg, in batch order, that would take its guarded account
    below zero given the balances ``before`` the batch (0 for an account not created yet)."""
    if all(before.get(a, 0) >= need for a, need in plan.need.items()):
        return None
    for index, entry in enumerate(plan.entries):
        for leg, account, prefix in zip(entry.legs, entry.accounts, entry.prefixes, strict=True):
            after = before.get(account, 0) + prefix
            if leg.amount_micros < 0 and after < 0 and guarded(leg):
                user = leg.account.user_id
                return InsufficientFunds(
                    details={
                        "account": leg.account.kind.value,
                        "user_id": str(user) if user else None,
                        "balance": micros_to_money(after - leg.amount_micros),
                        "required": micros_to_money(-leg.amount_micros),
                        "entry_index": index,
                    }
                )
    return None  # pragma: no cover - the needs are derived from these very legs


def _posted(plan: _Plan, before: dict[uuid.UUID, int], at: datetime) -> list[PostedEntry]:
    return [
        PostedEntry(
            entry.entry_id,
            entry.type,
            at,
            tuple(
                PostedLeg(leg.account, leg.amount_micros, before[account] + prefix)
                for leg, account, prefix in zip(
                    entry.legs, entry.accounts, entry.prefixes, strict=True
                )
            ),
        )
        for entry in plan.entries
    ]


async def _create_accounts(session: AsyncSession, refs: Sequence[AccountRef], at: datetime) -> None:
    """Create accounts used for the first time (zero balance; a concurrent creation wins), in id
    order like every lock."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    await session.execute(
        insert(_accounts).on_conflict_do_nothing(),
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


# --- PostgreSQL ---------------------------------------------------------------------------------

# Locks every account of the batch in id order and reads its balance, but only when all of them
# exist (else it locks nothing and returns no row): accounts are created holding no lock, since
# holding one while waiting for another transaction's insert of the same new account inverts
# the lock order (that transaction then waits for our lock).
_PG_LOCK = text(
    "SELECT id, balance_micros FROM ledger_accounts WHERE id = ANY(CAST(:ids AS UUID[])) "
    "AND (SELECT count(*) FROM ledger_accounts WHERE id = ANY(CAST(:ids AS UUID[]))) "
    "= CAST(:count AS BIGINT) ORDER BY id FOR UPDATE"
).columns(column("id", Uuid), column("balance_micros", BigInteger))
_PG_BALANCES = text(
    "SELECT id, balance_micros FROM ledger_accounts WHERE id = ANY(CAST(:ids AS UUID[]))"
).columns(column("id", Uuid), column("balance_micros", BigInteger))

# Every balance, entry and posting of the batch in one statement; arrays keep its text (and its
# prepared statement) the same for any batch size. Postings reference entries inserted by a
# sibling CTE: foreign keys are checked at the end of the statement, and the deferred trigger
# that refuses an unbalanced entry runs at commit as for any other posting.
_PG_WRITE = text(
    "WITH moved AS (UPDATE ledger_accounts "
    "SET balance_micros = ledger_accounts.balance_micros + c.net "
    "FROM unnest(CAST(:account_ids AS UUID[]), CAST(:nets AS BIGINT[])) AS c(id, net) "
    "WHERE ledger_accounts.id = c.id RETURNING 1), "
    "entries AS (INSERT INTO ledger_entries "
    "(id, type, reference_type, reference_id, description, created_at) "
    "SELECT e.id, e.type, e.reference_type, e.reference_id, e.description, "
    "CAST(:at AS TIMESTAMP WITH TIME ZONE) "
    "FROM unnest(CAST(:entry_ids AS UUID[]), CAST(:types AS VARCHAR[]), "
    "CAST(:reference_types AS VARCHAR[]), CAST(:reference_ids AS VARCHAR[]), "
    "CAST(:descriptions AS VARCHAR[])) "
    "AS e(id, type, reference_type, reference_id, description)), "
    "posted AS (INSERT INTO ledger_postings "
    "(id, entry_id, account_id, user_id, amount_micros, balance_after_micros, created_at) "
    "SELECT gen_random_uuid(), p.entry_id, p.account_id, p.user_id, p.amount, p.after, "
    "CAST(:at AS TIMESTAMP WITH TIME ZONE) "
    "FROM unnest(CAST(:posting_entries AS UUID[]), "
    "CAST(:posting_accounts AS UUID[]), CAST(:posting_users AS UUID[]), "
    "CAST(:amounts AS BIGINT[]), CAST(:afters AS BIGINT[])) "
    "AS p(entry_id, account_id, user_id, amount, after)) "
    "SELECT count(*) FROM moved"
).bindparams(bindparam("at", type_=UTCDateTime()))


async def _pg_lock(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The balances of ``ids``, all locked, or an empty dict (nothing locked) when one of the
    accounts does not exist yet."""
    rows = await session.execute(_PG_LOCK, {"ids": ids, "count": len(ids)})
    return {account: int(balance) for account, balance in rows.all()}


async def _pg_post(session: AsyncSession, plan: _Plan, at: datetime) -> dict[uuid.UUID, int]:
    """Lock, check, write; returns the balances before the batch."""
    ids = sorted(plan.refs)
    for _ in range(_ATTEMPTS):
        before = await _pg_lock(session, ids)
        if before:
            break
        # Some account is new: refuse now if the batch cannot pass anyway (creating nothing),
        # else create what is missing and lock again.
        rows = await session.execute(_PG_BALANCES, {"ids": ids})
        current = {account: int(balance) for account, balance in rows.all()}
        refusal = _refusal(plan, current)
        if refusal is not None:
            raise refusal
        missing = [plan.refs[account] for account in ids if account not in current]
        if missing:
            await _create_accounts(session, missing, at)
    else:  # pragma: no cover - only if accounts vanished
        raise RuntimeError("ledger batch could not lock its accounts")
    refusal = _refusal(plan, before)
    if refusal is not None:
        raise refusal
    moving = [(account, net) for account, net in plan.net.items() if net]
    params: dict[str, object] = {
        "at": at,
        "account_ids": [account for account, _ in moving],
        "nets": [net for _, net in moving],
        "entry_ids": [e.entry_id for e in plan.entries],
        "types": [e.type for e in plan.entries],
        "reference_types": [e.reference_type for e in plan.entries],
        "reference_ids": [e.reference_id for e in plan.entries],
        "descriptions": [e.description for e in plan.entries],
        "posting_entries": [e.entry_id for e in plan.entries for _ in e.legs],
        "posting_accounts": [a for e in plan.entries for a in e.accounts],
        "posting_users": [u for e in plan.entries for u in e.users],
        "amounts": [leg.amount_micros for e in plan.entries for leg in e.legs],
        "afters": [
            before[a] + prefix
            for e in plan.entries
            for a, prefix in zip(e.accounts, e.prefixes, strict=True)
        ],
    }
    moved = await session.scalar(_PG_WRITE, params)
    if moved != len(moving):  # pragma: no cover - the rows are locked since they were read
        raise RuntimeError(f"ledger batch moved {moved} of {len(moving)} locked accounts")
    return before


# --- SQLite -------------------------------------------------------------------------------------

# Rows of (id hex, net, need) as one JSON parameter: no limit on the number of bound variables.
_SQLITE_MOVE = text(
    "WITH c(id, net, need) AS (SELECT json_extract(value, '$[0]'), "
    "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(:changes)) "
    "UPDATE ledger_accounts SET balance_micros = ledger_accounts.balance_micros + c.net "
    "FROM c WHERE ledger_accounts.id = c.id AND ledger_accounts.balance_micros >= c.need "
    "RETURNING id, balance_micros"
).columns(column("id", Uuid), column("balance_micros", BigInteger))
_SQLITE_BALANCES = text(
    "SELECT id, balance_micros FROM ledger_accounts WHERE id IN (SELECT value FROM json_each(:ids))"
).columns(column("id", Uuid), column("balance_micros", BigInteger))


async def _sqlite_move(
    session: AsyncSession, rows: list[tuple[uuid.UUID, int, int]]
) -> dict[uuid.UUID, int]:
    """Add ``net`` to every account whose balance is at least ``need``; returns the new balances
    of those it moved."""
    changes = orjson.dumps([[account.hex, net, need] for account, net, need in rows]).decode()
    result = await session.execute(_SQLITE_MOVE, {"changes": changes})
    return {account: int(balance) for account, balance in result.all()}


async def _sqlite_post(session: AsyncSession, plan: _Plan, at: datetime) -> dict[uuid.UUID, int]:
    """Move the balances (undoing on a refusal), then insert; returns the balances before."""
    rows = [(account, plan.net[account], plan.need[account]) for account in sorted(plan.refs)]
    for _ in range(_ATTEMPTS):
        after = await _sqlite_move(session, rows)
        if len(after) == len(rows):
            before = {account: after[account] - net for account, net, _ in rows}
            await _sqlite_insert(session, plan, before, at)
            return before
        if after:
            await _sqlite_move(session, [(a, -net, _ANY) for a, net, _ in rows if a in after])
        # The update holds the writer lock now: these balances are the truth until commit.
        ids = orjson.dumps([account.hex for account in plan.refs]).decode()
        current = await session.execute(_SQLITE_BALANCES, {"ids": ids})
        before = {account: int(balance) for account, balance in current.all()}
        refusal = _refusal(plan, before)
        if refusal is not None:
            raise refusal
        missing = sorted(
            (ref for account, ref in plan.refs.items() if account not in before), key=_ref_id
        )
        if missing:
            await _create_accounts(session, missing, at)
    raise RuntimeError("ledger batch could not move its balances")  # pragma: no cover


async def _sqlite_insert(
    session: AsyncSession, plan: _Plan, before: dict[uuid.UUID, int], at: datetime
) -> None:
    # executemany: SQLite's own loop over the rows (passing them as JSON to one INSERT ... SELECT
    # measured no faster; the indexes and foreign keys are the cost).
    await session.execute(
        _ENTRY_INSERT,
        [
            {
                "id": e.entry_id,
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
                "entry_id": e.entry_id,
                "account_id": account,
                "user_id": user,
                "amount_micros": leg.amount_micros,
                "balance_after_micros": before[account] + prefix,
                "created_at": at,
            }
            for e in plan.entries
            for leg, account, user, prefix in zip(
                e.legs, e.accounts, e.users, e.prefixes, strict=True
            )
        ],
    )


async def post_entries(
    session: AsyncSession, entries: Sequence[NewEntry], *, at: datetime
) -> list[PostedEntry]:
    """See :func:`gridex.ledger.service.post_entries`."""
    if not entries:
        return []
    plan = _plan(entries)
    if session.get_bind().dialect.name == "postgresql":
        before = await _pg_post(session, plan, at)
    else:
        before = await _sqlite_post(session, plan, at)
    return _posted(plan, before, at)
