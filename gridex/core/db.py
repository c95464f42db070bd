"""Database engine, sessions and the declarative base shared by every domain's models."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


def _sqlite_pragmas(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


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
    pre_ping_idle_seconds: float = 10.0,
) -> AsyncEngine:
    """An async engine; on PostgreSQL with ``pre_ping`` a pooled connection is tested before use
    when it sat idle for more than ``pre_ping_idle_seconds`` (0: before every use)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
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
        pre_ping_idle_seconds: float = 10.0,
    ) -> None:
        self.url = url
        self.engine = create_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pre_ping=pre_ping,
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
