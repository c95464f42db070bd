"""Test fixtures: every database test runs on SQLite and, when configured, on PostgreSQL.

``GRIDEX_TEST_DATABASE_URL`` adds PostgreSQL, ``GRIDEX_TEST_REDIS_URL`` the Redis-backed cases.
Without them those cases skip; with them set and the service broken, they fail.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gridex.app import build_runtime, create_app, prepare
from gridex.core.clock import FrozenClock
from gridex.core.config import Settings
from gridex.core.migrate import upgrade
from gridex.core.runtime import Runtime
from gridex.models import Base

TEST_SECRET = "test-secret-key-that-is-long-enough-for-production-checks"
BACKENDS = ["sqlite", "postgresql"]
TEST_REGIONS = ("north", "south", "east", "west", "n", "hq", "elsewhere", "campus-north")


def _pg_url() -> str | None:
    return os.environ.get("GRIDEX_TEST_DATABASE_URL") or None


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A migrated database for the whole session, built with the real Alembic history."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "gridex-test.db"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        pg = _pg_url()
        if pg is None:
            pytest.skip("GRIDEX_TEST_DATABASE_URL is not set")
        url = pg
        await _reset_postgres(url)
    await asyncio.to_thread(upgrade, url)
    return url


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "secret_key": TEST_SECRET,
        "database_url": database_url,
        "run_jobs": False,
        "rate_limit_enabled": False,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "log_json": False,
        # The regions the tests name (an unknown one is 422 UNKNOWN_REGION).
        "regions": list(TEST_REGIONS),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Override in a test module (or with indirect parametrisation) to change settings."""
    return {}


@pytest.fixture
async def runtime(
    database_url: str, clock: FrozenClock, settings_overrides: dict[str, object]
) -> AsyncIterator[Runtime]:
    rt = build_runtime(make_settings(database_url, **settings_overrides), clock)
    await prepare(rt)
    yield rt
    async with rt.db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())
    await rt.limiter.reset()
    await rt.db.dispose()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
