"""Following committed facts: the durable path from another domain's rows to alerts and
notifications.

Pub/sub events are at most once (a process that dies between its commit and the publish loses
them), so nothing that must reach a person is derived from them. A *follower* reads a source's
rows instead: from its cursor (the newest fact time it handled) minus a look-back window, so
that a fact whose transaction committed late is still seen, skipping facts it holds a receipt
for. The receipts, the cursor and whatever the facts produce (alerts, notifications, emails)
are written in one transaction: a run that dies before its commit leaves the facts to the next
run, and a committed fact is handled exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, String, cast, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.db import conflict_insert, insert_or_ignore, is_postgres
from gridex.notifications.models import FactCursor, FactReceipt

T = TypeVar("T")
# Rows per receipt insert: well under SQLite's limit of bound parameters.
_CHUNK = 500


async def window_start(
    session: AsyncSession, source: str, now: datetime, lookback: timedelta
) -> datetime:
    """Where a follower of ``source`` starts reading: its cursor (or now, for a follower that
    never ran: history before the deployment is not replayed) minus the look-back window."""
    position = await session.scalar(select(FactCursor.position).where(FactCursor.name == source))
    return (position or now) - lookback


def unseen(source: str, key: ColumnElement[Any]) -> ColumnElement[bool]:
    """A filter for a source's rows whose ``key`` has no receipt yet (see :func:`uuid_key`)."""
    return ~exists().where(FactReceipt.source == source, FactReceipt.key == key)


def uuid_key(session: AsyncSession, column: Any) -> ColumnElement[str]:
    """A UUID column as the receipt key ``uuid.hex`` (SQLite stores UUIDs as hex already)."""
    if is_postgres(session):
        return func.replace(cast(column, String), "-", "")
    return cast(column, String)


async def unseen_since(
    session: AsyncSession, entity: type[T], at: Any, source: str, since: datetime, limit: int
) -> list[T]:
    """Rows of ``entity`` (keyed by its UUID ``id``) whose ``at`` column is at or after
    ``since`` and that ``source`` has no receipt for, oldest first, at most ``limit``."""
    key = entity.id  # type: ignore[attr-defined]
    rows = await session.scalars(
        select(entity)
        .where(at >= since, unseen(source, uuid_key(session, key)))
        .order_by(at, key)
        .limit(limit)
    )
    return list(rows)


def cast_str(column: Any) -> ColumnElement[str]:
    """An integer id column as its receipt key ``str(id)``."""
    return cast(column, String)


async def claim(
    session: AsyncSession, source: str, facts: Sequence[tuple[str, datetime]]
) -> set[str]:
    """Write receipts for ``facts`` (key, time); returns the keys that had none (to handle)."""
    claimed: set[str] = set()
    for i in range(0, len(facts), _CHUNK):
        rows = [{"source": source, "key": k, "at": at} for k, at in facts[i : i + _CHUNK]]
        result = await session.execute(
            insert_or_ignore(session, FactReceipt).values(rows).returning(FactReceipt.key)
        )
        claimed.update(result.scalars())
    return claimed


async def advance(
    session: AsyncSession, source: str, position: datetime, now: datetime, lookback: timedelta
) -> None:
    """Move the cursor of ``source`` forward to ``position`` (never back) and forget receipts
    that the window can no longer reach."""
    current = await session.scalar(select(FactCursor.position).where(FactCursor.name == source))
    if current is not None and current >= position:
        return
    stmt = conflict_insert(session, FactCursor).values(
        name=source, position=position, updated_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[FactCursor.name],
            set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
        )
    )
    await session.execute(
        delete(FactReceipt).where(
            FactReceipt.source == source, FactReceipt.at < position - 2 * lookback
        )
    )


@dataclass(frozen=True, slots=True)
class Source(Generic[T]):
    """A kind of fact: ``fetch(session, since)`` reads its rows at or after ``since`` (oldest
    first, bounded), ``key`` and ``at`` name and date one row."""

    name: str
    fetch: Callable[[AsyncSession, datetime], Awaitable[Sequence[T]]]
    key: Callable[[T], str]
    at: Callable[[T], datetime]


async def follow(
    session: AsyncSession, source: Source[T], now: datetime, lookback: timedelta
) -> list[T]:
    """The facts of ``source`` not handled before, claimed in the caller's transaction (which
    also moves the cursor): handle them before it commits."""
    since = await window_start(session, source.name, now, lookback)
    rows = await source.fetch(session, since)
    if not rows:
        return []
    claimed = await claim(session, source.name, [(source.key(r), source.at(r)) for r in rows])
    await advance(session, source.name, max(source.at(r) for r in rows), now, lookback)
    return [r for r in rows if source.key(r) in claimed]
