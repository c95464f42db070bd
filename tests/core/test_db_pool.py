"""The PostgreSQL pool's check before use: only connections that sat idle are tested."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from gridex.core import db as core_db
from gridex.core.db import Database


def _postgres(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("pool checks apply to PostgreSQL")
    return database_url


async def _backend_pid(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(database_url: str, pid: int) -> None:
    other = Database(database_url, pool_size=1, max_overflow=0, pre_ping=False)
    try:
        async with other.engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()


def _count_pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    dialect = database.engine.sync_engine.dialect
    original = dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(original(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counting)
    return pings


async def test_a_connection_back_from_use_is_not_pinged(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(
        _postgres(database_url), pool_size=1, max_overflow=0, pre_ping_idle_seconds=60
    )
    pings = _count_pings(database, monkeypatch)
    try:
        first = await _backend_pid(database)
        second = await _backend_pid(database)
    finally:
        await database.dispose()
    assert first == second
    assert pings == []


async def test_an_idle_connection_is_pinged_and_replaced_when_dead(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _postgres(database_url)
    database = Database(url, pool_size=1, max_overflow=0, pre_ping_idle_seconds=5)
    pings = _count_pings(database, monkeypatch)
    clock = [time.monotonic()]
    monkeypatch.setattr(core_db, "_monotonic", lambda: clock[0])
    try:
        first = await _backend_pid(database)
        await _terminate(url, first)  # as a database restart would
        clock[0] += 6  # the pooled connection has now been idle for longer than 5 s
        second = await _backend_pid(database)  # no error: the ping found it dead
        assert len(pings) == 1
        assert second != first
        third = await _backend_pid(database)  # used a moment ago: no ping
        assert third == second
        assert len(pings) == 1
    finally:
        await database.dispose()


async def test_without_an_idle_window_every_checkout_is_pinged(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _postgres(database_url)
    database = Database(url, pool_size=1, max_overflow=0, pre_ping_idle_seconds=0)
    try:
        first = await _backend_pid(database)
        await _terminate(url, first)
        second = await _backend_pid(database)
    finally:
        await database.dispose()
    assert second != first
