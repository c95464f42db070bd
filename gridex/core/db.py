"""Database engine, sessions and the declarative base shared by every domain's models."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
import uuid
import weakref
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, SessionTransaction, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.types import TypeDecorator

# Stable constraint names so that Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC
    and made aware again on load. Naive datetimes are refused so that local time never slips in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def dialect_name(session: AsyncSession | AsyncConnection) -> str:
    """``"postgresql"`` or ``"sqlite"``: the backend a session or connection talks to."""
    bind = session.get_bind() if isinstance(session, AsyncSession) else session
    return str(bind.dialect.name)


def is_postgres(session: AsyncSession | AsyncConnection) -> bool:
    return dialect_name(session) == "postgresql"


OnConflictInsert = postgresql.Insert | sqlite.Insert


def conflict_insert(
    session: AsyncSession | AsyncConnection | str, table: Table | Any
) -> OnConflictInsert:
    """``INSERT`` with the backend's ``ON CONFLICT`` clause (PostgreSQL and SQLite spell it
    alike): chain ``.on_conflict_do_nothing(...)`` or ``.on_conflict_do_update(...)``.

    ``session`` may also be a dialect name, for statements built once per dialect. This is the
    one place that picks the dialect's insert construct.
    """
    name = session if isinstance(session, str) else dialect_name(session)
    return postgresql.insert(table) if name == "postgresql" else sqlite.insert(table)


def insert_or_ignore(
    session: AsyncSession | AsyncConnection | str,
    table: Table | Any,
    *,
    conflict: Any = None,
) -> OnConflictInsert:
    """``INSERT ... ON CONFLICT [(conflict)] DO NOTHING``: rows that already exist are left be."""
    return conflict_insert(session, table).on_conflict_do_nothing(index_elements=conflict)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    return on_connect


class SQLiteWriteGate:
    """One writer at a time on a SQLite file, in arrival order, across processes.

    SQLite lets one connection write at a time; the others wait in its busy handler, which
    polls (up to every 100 ms) and gives up after ``busy_timeout``. With several workers each
    running long batch transactions, a waiter can lose every race until the timeout expires and
    the request fails. Writers of large transactions therefore queue here first: an asyncio lock
    orders the writers of one process, and an exclusive ``flock`` on ``<file>-writer`` (blocking,
    in a thread: the kernel wakes the next waiter at once) orders the processes. Whoever holds
    the gate starts its transaction with ``BEGIN IMMEDIATE`` and meets, at most, a short write of
    someone who does not use the gate.
    """

    def __init__(self, path: str | None) -> None:
        self._path = f"{path}-writer" if path else None
        self._fd: int | None = None
        self._pid = 0  # the process that opened _fd: a forked child opens its own
        self._local = asyncio.Lock()

    async def acquire(self) -> None:
        await self._local.acquire()
        try:
            if self._path is not None and (self._fd is None or self._pid != os.getpid()):
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
        except BaseException:
            self._local.release()
            raise
        if self._fd is None:
            return
        fut = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, self._fd, fcntl.LOCK_EX)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The thread still takes the file lock: give it back, then the process' lock.
            fut.add_done_callback(self._abandon)
            raise
        except BaseException:
            self._local.release()
            raise

    def _abandon(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._local.release()

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._local.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_WRITE_GATES: weakref.WeakKeyDictionary[Engine, SQLiteWriteGate] = weakref.WeakKeyDictionary()
_GATE_HELD = "gridex_sqlite_write_gate"


async def begin_write(session: AsyncSession) -> None:
    """Start the session's transaction as a writer, now, before its first write.

    PostgreSQL: nothing to do (row locks). SQLite: unless the connection already holds the write
    lock (an earlier statement wrote), queue at the file's ``SQLiteWriteGate`` and ``BEGIN
    IMMEDIATE``, so the transaction owns the lock from its first statement on and never has to
    upgrade a read; the gate is given back when the session's transaction ends (commit,
    rollback or close). Call it once the work before the writes (validation) is done, so the
    lock is held only for the writes.
    """
    bind = session.get_bind()
    if bind.dialect.name != "sqlite" or session.info.get(_GATE_HELD):
        return
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if driver is None or driver.in_transaction:
        return
    gate = _WRITE_GATES.get(bind) if isinstance(bind, Engine) else None
    if gate is not None:
        await gate.acquire()
        session.info[_GATE_HELD] = gate
    try:
        with session.no_autoflush:  # pending changes are written inside the transaction
            await session.execute(text("BEGIN IMMEDIATE"))
    except BaseException:
        session.info.pop(_GATE_HELD, None)
        if gate is not None:
            gate.release()
        raise


@event.listens_for(Session, "after_transaction_end")
def _release_write_gate(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        gate = session.info.pop(_GATE_HELD, None)
        if gate is not None:
            gate.release()


# Key in a pooled connection's ``info`` of the monotonic time it was last returned to the pool.
_IDLE_SINCE = "gridex_idle_since"


def _monotonic() -> float:
    return time.monotonic()


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Test a pooled connection on checkout, but only if it sat idle for over ``idle_seconds``.

    SQLAlchemy's own ``pool_pre_ping`` tests every checkout; on asyncpg that is three round trips
    (BEGIN, an empty query, ROLLBACK) before each request's first statement. Connections that
    were in use a moment ago are as good as a successful ping would prove; a connection that
    waited longer (light traffic, or a pause in which the database may have restarted) is
    tested first. A failed test invalidates every pooled connection that is older and the pool
    opens a fresh one, so a restart during a quiet spell costs no request; during a burst the
    requests already holding a connection fail as they would with any check.
    """
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    def checkin(_: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = _monotonic()

    def checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, _: PoolProxiedConnection
    ) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or _monotonic() - since <= idle_seconds:
            return  # new, or back from use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: the connection cannot be trusted
            raise InvalidatePoolError(f"pooled connection failed its ping: {exc}") from exc

    event.listen(sync_engine, "checkin", checkin)
    event.listen(sync_engine, "checkout", checkout)


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 20,
    max_overflow: int = 10,
    pre_ping: bool = True,
    sqlite_busy_timeout_ms: int = 10_000,
    pre_ping_idle_seconds: float = 10.0,
) -> AsyncEngine:
    """An async engine; on PostgreSQL with ``pre_ping`` a pooled connection is tested before use
    when it sat idle for more than ``pre_ping_idle_seconds`` (0: before every use)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(sqlite_busy_timeout_ms))
        path = engine.url.database
        file = path if path and path != ":memory:" and not path.startswith("file:") else None
        _WRITE_GATES[engine.sync_engine] = SQLiteWriteGate(file and os.path.abspath(file))
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping and pre_ping_idle_seconds <= 0,
    )
    if pre_ping and pre_ping_idle_seconds > 0:
        _ping_when_idle(engine, pre_ping_idle_seconds)
    return engine


class Database:
    """The engine and session factory of one process."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = 20,
        max_overflow: int = 10,
        pre_ping: bool = True,
        sqlite_busy_timeout_ms: int = 10_000,
        pre_ping_idle_seconds: float = 10.0,
    ) -> None:
        self.url = url
        self.engine = create_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pre_ping=pre_ping,
            sqlite_busy_timeout_ms=sqlite_busy_timeout_ms,
            pre_ping_idle_seconds=pre_ping_idle_seconds,
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        gate = _WRITE_GATES.pop(self.engine.sync_engine, None)
        if gate is not None:
            gate.close()
