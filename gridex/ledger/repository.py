"""Read queries of the ledger: history, statements, trial balance and the verification."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.ledger.models import AccountKind, JournalEntry, LedgerAccount, Posting, account_id

_NON_NEGATIVE = (
    AccountKind.reserved.value,
    AccountKind.escrow.value,
    AccountKind.fees.value,
    AccountKind.payouts.value,
)


def history_query(
    user_id: uuid.UUID,
    *,
    entry_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[JournalEntry]:
    """Entries with a posting of the user (own accounts or on their behalf), newest first."""
    touching = select(Posting.entry_id).where(Posting.user_id == user_id)
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
    entry_id: uuid.UUID
    type: str
    description: str
    at: datetime
    available_micros: int = 0
    reserved_micros: int = 0


@dataclass
class DailyStatement:
    day: date
    opening: dict[str, int]
    closing: dict[str, int]
    movements: list[Movement] = field(default_factory=list)


def day_start(day: date) -> datetime:
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
    rows = await session.scalars(
        select(LedgerAccount).order_by(
            LedgerAccount.user_id.is_not(None), LedgerAccount.user_id, LedgerAccount.kind
        )
    )
    return list(rows)


@dataclass
class VerifyReport:
    accounts: int = 0
    entries: int = 0
    postings: int = 0
    trial_balance_micros: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession) -> VerifyReport:
    """Recompute every balance from the postings and check every invariant of the ledger."""
    report = VerifyReport()
    report.accounts = int(
        await session.scalar(select(func.count()).select_from(LedgerAccount)) or 0
    )
    report.entries = int(await session.scalar(select(func.count()).select_from(JournalEntry)) or 0)
    report.postings = int(await session.scalar(select(func.count()).select_from(Posting)) or 0)

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

    unbalanced = await session.execute(
        select(Posting.entry_id, func.sum(Posting.amount_micros), func.count())
        .group_by(Posting.entry_id)
        .having((func.sum(Posting.amount_micros) != 0) | (func.count() < 2))
    )
    for entry, entry_sum, count in unbalanced:
        report.problems.append(f"entry {entry}: {count} postings summing to {entry_sum}")

    empty = await session.scalars(
        select(JournalEntry.id).where(~JournalEntry.id.in_(select(Posting.entry_id)))
    )
    for entry in empty:
        report.problems.append(f"entry {entry}: no postings")

    zero = await session.scalars(select(Posting.id).where(Posting.amount_micros == 0))
    for posting in zero:
        report.problems.append(f"posting {posting}: amount is zero")

    negative = await session.execute(
        select(LedgerAccount.id, LedgerAccount.kind, LedgerAccount.balance_micros).where(
            LedgerAccount.kind.in_(_NON_NEGATIVE), LedgerAccount.balance_micros < 0
        )
    )
    for acc, kind, stored in negative:
        report.problems.append(f"account {acc} ({kind}): negative balance {stored}")

    total = await session.scalar(select(func.coalesce(func.sum(LedgerAccount.balance_micros), 0)))
    report.trial_balance_micros = int(total or 0)
    if report.trial_balance_micros != 0:
        report.problems.append(f"trial balance is {report.trial_balance_micros}, not 0")
    postings_total = await session.scalar(select(func.coalesce(func.sum(Posting.amount_micros), 0)))
    if int(postings_total or 0) != 0:
        report.problems.append(f"sum of all postings is {postings_total}, not 0")
    return report
