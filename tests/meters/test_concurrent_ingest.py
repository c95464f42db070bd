"""Concurrent batch ingest on SQLite from two processes' worth of engines on one file.

Each engine stands for a ``gridex serve`` worker. SQLite admits one writer at a time and lets the
others poll for the lock until ``busy_timeout``; with a timeout far shorter than one batch
transaction, any writer that had to wait in SQLite itself would fail with "database is locked".
Ingest writers queue at the write gate instead, so every call succeeds and every reading lands.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, make_url, select

from gridex.app import build_runtime, create_app
from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.db import begin_write
from gridex.core.runtime import Runtime
from gridex.meters.models import MeterReading, MeterRollup
from tests.conftest import make_settings
from tests.factories import API, signed_in
from tests.meters.helpers import at_now, make_key, make_meter, quarters, reading

BUSY_TIMEOUT_MS = 20  # far below the time one 2,000-reading transaction holds the lock
CALLS_PER_ENGINE = 3
PER_CALL = 2_000
METERS_PER_CALL = 4

pytestmark = pytest.mark.parametrize(
    "settings_overrides", [{"sqlite_busy_timeout_ms": BUSY_TIMEOUT_MS}], indirect=True
)


@pytest.fixture
async def second_runtime(
    runtime: Runtime, database_url: str, clock: FrozenClock
) -> AsyncIterator[Runtime]:
    """Another engine on the same database file, as a second worker process has."""
    if not runtime.db.is_sqlite:
        pytest.skip("the SQLite write lock")
    rt = build_runtime(make_settings(database_url, sqlite_busy_timeout_ms=BUSY_TIMEOUT_MS), clock)
    yield rt
    await rt.db.dispose()


def _batch(serials: list[str], ends: list[Any]) -> dict[str, Any]:
    return {
        "readings": [
            {"meter_serial": serial, **reading(end, 0.25, 0.05)}
            for serial in serials
            for end in ends
        ]
    }


async def test_concurrent_batches_from_two_workers_all_succeed(
    client: httpx.AsyncClient, runtime: Runtime, second_runtime: Runtime, clock: FrozenClock
) -> None:
    now = at_now(clock)
    head_end = await signed_in(client, runtime, Role.operator)
    key = await make_key(client, head_end, ["readings:write"])
    calls = 2 * CALLS_PER_ENGINE
    meters = [
        [(await make_meter(client, head_end))["serial"] for _ in range(METERS_PER_CALL)]
        for _ in range(calls)
    ]
    per_meter = PER_CALL // METERS_PER_CALL
    ends = quarters(now - timedelta(minutes=15 * per_meter), per_meter)
    bodies = [_batch(serials, ends) for serials in meters]

    transport = httpx.ASGITransport(app=create_app(runtime=second_runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
        responses = await asyncio.gather(
            *(
                (client if i % 2 == 0 else other).post(
                    f"{API}/readings/batch", json=body, headers=key
                )
                for i, body in enumerate(bodies)
            )
        )

    assert [r.status_code for r in responses] == [200] * calls, [r.text[:200] for r in responses]
    assert [r.json() for r in responses] == [
        {"accepted": PER_CALL, "duplicates": 0, "rejected": []}
    ] * calls
    async with runtime.db.sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(MeterReading))
        hourly = await session.scalar(
            select(func.sum(MeterRollup.consumed_wh)).where(MeterRollup.granularity == "1h")
        )
    assert stored == calls * PER_CALL
    assert hourly == calls * PER_CALL * 250


def _gate_is_free(database_url: str) -> bool:
    """Whether another process could take the write gate of this database file right now."""
    path = make_url(database_url).database
    assert path
    fd = os.open(f"{os.path.abspath(path)}-writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also drops the lock
    return True


async def test_the_gate_is_given_back_however_the_transaction_ends(
    runtime: Runtime, second_runtime: Runtime, database_url: str
) -> None:
    readings = MeterReading.__table__
    async with runtime.db.sessionmaker() as session:
        await begin_write(session)
        assert not _gate_is_free(database_url)
        await session.execute(readings.delete())
        await session.rollback()
    assert _gate_is_free(database_url)
    async with second_runtime.db.sessionmaker() as session:
        await begin_write(session)
        assert not _gate_is_free(database_url)
        await session.commit()
    assert _gate_is_free(database_url)
    async with runtime.db.sessionmaker() as session:
        await begin_write(session)
        # closed without commit or rollback
    assert _gate_is_free(database_url)

    async def failing_writer() -> None:
        async with second_runtime.db.sessionmaker() as session:
            await begin_write(session)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await failing_writer()
    assert _gate_is_free(database_url)
