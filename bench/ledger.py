"""Benchmark of the ledger: journal entries per second through the service; one JSON line per db.

Run as ``.venv/bin/python bench/ledger.py`` from the repository root. PostgreSQL comes from
``GRIDEX_BENCH_DATABASE_URL`` (default: database ``bench`` on the local server, created when
missing; its schema is dropped and rebuilt by the migrations); SQLite uses a temporary file.

* ``entries_per_s``: ``BATCH`` simple transfers (from one user's ``available`` to another's,
  rotating over ``PAIRS`` pairs) through the service's batch path, ``ledger.transfer_many``, in
  one call and one transaction, commit included: how clearing and settlement post an epoch. Every
  entry keeps the full ledger: guarded balances, the entry row, its two postings with their
  balances after, foreign keys, and on PostgreSQL the deferred balance trigger at commit.
* ``single_entries_per_s``: the same through ``ledger.transfer``, one call per entry, in one
  transaction: the same write path as the batch, for a batch of one (on PostgreSQL one statement
  that locks, checks, moves the balances and inserts the entry and its postings: one round trip
  per entry).
* ``raw_per_s``: the baseline: the same number of plain ``INSERT`` statements of two posting rows
  in one transaction, through the same engine, into a table shaped and indexed like
  ``ledger_postings`` (no foreign keys, triggers or balance updates).
* ``ratio`` = entries_per_s / raw_per_s; ``single_ratio`` = single_entries_per_s / raw_per_s.
* ``raw_executemany_per_s``: the stack's ceiling for the same rows: all ``2 * BATCH`` posting
  rows in one ``executemany`` (SQLAlchemy's bulk insert) in one transaction, per entry (pair of
  rows); ``batch_vs_executemany`` = entries_per_s / raw_executemany_per_s.
* ``tx_*``: the single-call path and the raw INSERT with one transaction (commit) per entry, by
  ``tx_workers`` concurrent workers on their own connections and accounts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Index, MetaData, Table, Uuid, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench  # noqa: F401  (logs to stderr)
from gridex.auth.models import Role, User, UserStatus
from gridex.core.clock import SystemClock
from gridex.core.db import Database, UTCDateTime
from gridex.core.migrate import upgrade
from gridex.ledger import service as ledger
from gridex.ledger.models import EntryType

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench"
BATCH = 20_000  # entries (and raw two-row INSERTs) in one transaction
PAIRS = 100  # the batch rotates over this many (source, destination) pairs of users
PER_TX = {"postgresql": 2_000, "sqlite": 1_000}  # entries, one transaction each
WORKERS = {"postgresql": 8, "sqlite": 1}  # SQLite has one writer: more workers only queue
RAW_TABLE = "bench_raw_postings"


async def _prepare_postgres(url: str) -> None:
    target = make_url(url)
    admin = create_async_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        exists = await conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
        )
        if not exists:
            await conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    await admin.dispose()
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


def _raw_table_def() -> Table:
    """A table shaped and indexed like ledger_postings, without foreign keys or triggers."""
    return Table(
        RAW_TABLE,
        MetaData(),
        Column("id", Uuid, primary_key=True),
        Column("entry_id", Uuid, nullable=False, index=True),
        Column("account_id", Uuid, nullable=False),
        Column("user_id", Uuid),
        Column("amount_micros", BigInteger, nullable=False),
        Column("balance_after_micros", BigInteger, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Index(f"ix_{RAW_TABLE}_user_created", "user_id", "created_at"),
        Index(f"ix_{RAW_TABLE}_account_created", "account_id", "created_at"),
    )


def _raw_rows(source: uuid.UUID, destination: uuid.UUID, now: datetime) -> list[dict[str, Any]]:
    """The two plain posting rows of one transfer of 1 micro, for the raw baselines."""
    entry = uuid.uuid4()
    return [
        {
            "id": uuid.uuid4(),
            "entry_id": entry,
            "account_id": ledger.user_account(user).id,
            "user_id": user,
            "amount_micros": amount,
            "balance_after_micros": 0,
            "created_at": now,
        }
        for user, amount in ((source, -1), (destination, 1))
    ]


async def _raw_table(db: Database, table: Table) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)


def bench_user(now: datetime, **fields: Any) -> User:
    """An active prosumer row for the benches to seed (``fields`` override the defaults)."""
    values: dict[str, Any] = {
        "username": f"bench-{uuid.uuid4().hex[:12]}",
        "role": Role.prosumer,
        "status": UserStatus.active,
        "profile_metadata": {},
        "department_metadata": {},
        "preferences": {},
        "created_at": now,
        "updated_at": now,
    }
    return User(**(values | fields))


async def _users(db: Database, count: int) -> list[uuid.UUID]:
    now = SystemClock().now()
    async with db.sessionmaker() as session:
        users = [bench_user(now) for _ in range(count)]
        session.add_all(users)
        await session.flush()
        for user in users:
            await ledger.credit(
                session,
                at=now,
                user_id=user.id,
                amount_micros=10**15,
                source=ledger.DEPOSITS,
                type=EntryType.topup,
                description="bench funds",
            )
        await session.commit()
        return [user.id for user in users]


async def _timed(workers: int, per_worker: int, job: Callable[[int], Awaitable[None]]) -> float:
    async def loop(worker: int) -> None:
        for _ in range(per_worker):
            await job(worker)

    start = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(workers)))
    return time.perf_counter() - start


async def run(db_name: str, url: str) -> dict[str, object]:
    if db_name == "postgresql":
        await _prepare_postgres(url)
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    clock = SystemClock()
    try:
        raw = _raw_table_def()
        await _raw_table(db, raw)
        workers = WORKERS[db_name]
        users = await _users(db, 2 * PAIRS)

        async def service_entry(worker: int) -> None:
            source, destination = users[2 * worker], users[2 * worker + 1]
            async with db.sessionmaker() as session:
                await ledger.transfer(
                    session,
                    at=clock.now(),
                    source=ledger.user_account(source),
                    destination=ledger.user_account(destination),
                    amount_micros=1,
                    description="bench",
                )
                await session.commit()

        async def raw_entry(worker: int) -> None:
            source, destination = users[2 * worker], users[2 * worker + 1]
            async with db.sessionmaker() as session:
                await session.execute(raw.insert(), _raw_rows(source, destination, clock.now()))
                await session.commit()

        # Warm both paths (connections, statement caches) before timing.
        await _timed(workers, 50, service_entry)
        await _timed(workers, 50, raw_entry)

        def transfers(count: int) -> list[ledger.Transfer]:
            return [
                ledger.Transfer(
                    ledger.user_account(users[2 * (i % PAIRS)]),
                    ledger.user_account(users[2 * (i % PAIRS) + 1]),
                    1,
                    description="bench",
                )
                for i in range(count)
            ]

        async def batch_service(count: int) -> None:
            async with db.sessionmaker() as session:
                await ledger.transfer_many(session, transfers(count), at=clock.now())
                await session.commit()

        async def raw_executemany() -> None:
            async with db.sessionmaker() as session:
                now = clock.now()
                rows = []
                for i in range(BATCH):
                    source, destination = users[2 * (i % PAIRS)], users[2 * (i % PAIRS) + 1]
                    rows += _raw_rows(source, destination, now)
                await session.execute(raw.insert(), rows)
                await session.commit()

        await batch_service(500)

        # Primary numbers: BATCH entries in one transaction (how clearing and settlement post an
        # epoch), against BATCH two-row INSERTs in one transaction.
        async def service_batch() -> None:
            async with db.sessionmaker() as session:
                for i in range(BATCH):
                    source, destination = users[2 * (i % PAIRS)], users[2 * (i % PAIRS) + 1]
                    await ledger.transfer(
                        session,
                        at=clock.now(),
                        source=ledger.user_account(source),
                        destination=ledger.user_account(destination),
                        amount_micros=1,
                        description="bench",
                    )
                await session.commit()

        async def raw_batch() -> None:
            async with db.sessionmaker() as session:
                for i in range(BATCH):
                    source, destination = users[2 * (i % PAIRS)], users[2 * (i % PAIRS) + 1]
                    await session.execute(raw.insert(), _raw_rows(source, destination, clock.now()))
                await session.commit()

        start = time.perf_counter()
        await raw_batch()
        raw_seconds = time.perf_counter() - start
        start = time.perf_counter()
        await raw_executemany()
        executemany_seconds = time.perf_counter() - start
        start = time.perf_counter()
        await batch_service(BATCH)
        batch_seconds = time.perf_counter() - start
        start = time.perf_counter()
        await service_batch()
        service_seconds = time.perf_counter() - start

        # Secondary: one transaction per entry (commit and fsync each), concurrent workers.
        per_worker = PER_TX[db_name] // workers
        tx_raw_seconds = await _timed(workers, per_worker, raw_entry)
        tx_service_seconds = await _timed(workers, per_worker, service_entry)
        tx_entries = per_worker * workers
        entries_per_s, raw_per_s = BATCH / batch_seconds, BATCH / raw_seconds
        single_per_s, executemany_per_s = BATCH / service_seconds, BATCH / executemany_seconds
        return {
            "bench": "ledger",
            "db": db_name,
            "entries_per_s": round(entries_per_s),
            "raw_per_s": round(raw_per_s),
            "ratio": round(entries_per_s / raw_per_s, 3),
            "single_entries_per_s": round(single_per_s),
            "single_ratio": round(single_per_s / raw_per_s, 3),
            "raw_executemany_per_s": round(executemany_per_s),
            "batch_vs_executemany": round(entries_per_s / executemany_per_s, 3),
            "entries": BATCH,
            "tx_entries_per_s": round(tx_entries / tx_service_seconds),
            "tx_raw_per_s": round(tx_entries / tx_raw_seconds),
            "tx_ratio": round(tx_raw_seconds / tx_service_seconds, 3),
            "tx_workers": workers,
        }
    finally:
        await db.dispose()


async def main() -> None:
    pg_url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or DEFAULT_PG
    print(json.dumps(await run("postgresql", pg_url)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(await run("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db")), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
