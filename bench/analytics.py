"""Benchmark of analytics on a year of data for 1,000 meters (PostgreSQL); one JSON line.

Run as ``.venv/bin/python bench/analytics.py`` from the repository root. PostgreSQL comes from
``GRIDEX_BENCH_DATABASE_URL`` (default: database ``bench`` on the local server, created when
missing; its schema is dropped and rebuilt by the migrations).

The seed (not timed), generated in the database with INSERT ... SELECT: one region, ``METERS``
meters of as many users (every other one with solar), and a year of their 15-minute data as the
rollups ingest keeps (hourly rows of 4 readings each, then days and months summed from the
hours). Analytics read rollups only, so raw readings are not generated. A database that holds
this seed already is reused (``seed_s`` 0), so that runs back to back measure the same data.

Timed, through the service functions the routes call: the operator's region overview
(``/dashboard/stats``, its default 30 days) and one prosumer's yearly energy report
(``/analytics/energy`` over the year, by month), each with the answer cache cleared (cold) and
then served from it (warm), the median of ``ROUNDS``. The floor is one hand-written SQL
statement over the same hourly rollups computing the overview's region totals (consumed,
produced, met locally, peak hour), timed the same way. ``ratio`` = overview cold / floor.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger import DEFAULT_PG, _prepare_postgres
from gridex.analytics import service
from gridex.analytics.cache import cache_of
from gridex.app import build_runtime
from gridex.auth.models import Role, User
from gridex.auth.service import Principal
from gridex.core.clock import FrozenClock
from gridex.core.config import Settings
from gridex.core.migrate import upgrade
from gridex.core.runtime import Runtime
from gridex.regions.service import ensure_regions

METERS = 1_000
REGION = "bench"
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)
ROUNDS = 5

_SEED_SQL = [
    f"""INSERT INTO users (id, username, role, status, region, metadata, failed_login_count,
        department_metadata, preferences, created_at, updated_at)
    SELECT md5('u' || i)::uuid, 'bench-' || i, CASE WHEN i = 0 THEN 'operator' ELSE 'prosumer' END,
        'active', '{REGION}', '{{}}', 0, '{{}}', '{{}}', now(), now()
    FROM generate_series(0, {METERS}) AS i""",
    f"""INSERT INTO meters (id, serial, kind, status, region, owner_id, capacity_w, location,
        metadata, interval_minutes, online, created_at, updated_at)
    SELECT md5('m' || i)::uuid, 'BENCH-' || i, 'bidirectional', 'active', '{REGION}',
        md5('u' || i)::uuid, 10000, '{{}}', '{{}}', 15, i % 10 <> 0, now(), now()
    FROM generate_series(1, {METERS}) AS i""",
    # A year of hours: household load with a morning and evening bump; solar on every other
    # meter as a half sine over 06:00-18:00 UTC, each hour scaled by a pseudo-random sky.
    f"""INSERT INTO meter_rollups (meter_id, granularity, bucket_start, consumed_wh,
        produced_wh, readings, peak_w, min_w, voltage_mv_sum, voltage_count, current_ma_sum,
        current_count)
    SELECT md5('m' || i)::uuid, '1h', h, c, p, 4, c * 2, c / 2, 0, 0, 0, 0
    FROM generate_series(1, {METERS}) AS i
    CROSS JOIN generate_series(
        TIMESTAMPTZ '{YEAR_START.isoformat()}',
        TIMESTAMPTZ '{(YEAR_END - timedelta(hours=1)).isoformat()}', INTERVAL '1 hour') AS h
    CROSS JOIN LATERAL (SELECT extract(hour FROM h AT TIME ZONE 'UTC')::int AS hr) AS t
    CROSS JOIN LATERAL (SELECT
        (300 + 200 * (t.hr BETWEEN 7 AND 8)::int + 700 * (t.hr BETWEEN 18 AND 21)::int
            + (i * 37 + t.hr * 11) % 150)::int8 AS c,
        CASE WHEN i % 2 = 0 AND t.hr BETWEEN 6 AND 17
            THEN (4000 * sin(pi() * (t.hr - 5.5) / 12)
                  * (0.3 + 0.7 * ((extract(doy FROM h)::int * 7 + t.hr * 13 + i) % 10) / 10.0)
                 )::int8
            ELSE 0 END AS p) AS v""",
    """INSERT INTO meter_rollups
    SELECT meter_id, '1d', date_trunc('day', bucket_start, 'UTC'), sum(consumed_wh),
        sum(produced_wh), sum(readings), max(peak_w), min(min_w), 0, 0, 0, 0
    FROM meter_rollups WHERE granularity = '1h' GROUP BY 1, 3""",
    """INSERT INTO meter_rollups
    SELECT meter_id, '1mo', date_trunc('month', bucket_start, 'UTC'), sum(consumed_wh),
        sum(produced_wh), sum(readings), max(peak_w), min(min_w), 0, 0, 0, 0
    FROM meter_rollups WHERE granularity = '1d' GROUP BY 1, 3""",
    "ANALYZE",
]

FLOOR_SQL = text(
    """WITH h AS (
        SELECT bucket_start, sum(consumed_wh) AS c, sum(produced_wh) AS p
        FROM meter_rollups
        WHERE granularity = '1h' AND bucket_start >= :a AND bucket_start < :b
          AND meter_id IN (SELECT id FROM meters WHERE region = :region)
        GROUP BY bucket_start)
    SELECT sum(c), sum(p), sum(least(c, p)), max(c) FROM h"""
)


async def _seed(rt: Runtime) -> None:
    await ensure_regions(rt.db, [REGION], rt.clock.now())
    async with rt.db.engine.begin() as conn:
        for statement in _SEED_SQL:
            await conn.execute(text(statement))


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def _seeded(url: str) -> bool:
    """Whether the database holds this bench's year already (a re-run skips the seed)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT count(*) FROM meter_rollups WHERE granularity = '1mo'")
            )
    except Exception:
        return False
    finally:
        await engine.dispose()
    return found == METERS * 12


async def run(url: str) -> dict[str, Any]:
    reuse = await _seeded(url)
    if not reuse:
        await _prepare_postgres(url)
    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=url,
        run_jobs=False,
        chain="off",
        regions=[REGION],
        analytics_cache_seconds=600,
    )
    rt = build_runtime(settings, FrozenClock(YEAR_END))
    seeded = time.perf_counter()
    if not reuse:
        await _seed(rt)
    seed_s = time.perf_counter() - seeded
    a, b = YEAR_END - timedelta(days=30), YEAR_END
    async with rt.db.sessionmaker() as session:
        users = {u.username: u for u in await session.scalars(select(User))}
    operator = Principal(user=users["bench-0"])
    prosumer = Principal(user=users["bench-2"])
    assert operator.role == Role.operator

    async def overview() -> Any:
        async with rt.db.sessionmaker() as session:
            return await service.dashboard(session, rt, operator, None, None, None)

    async def yearly() -> Any:
        async with rt.db.sessionmaker() as session:
            return await service.energy(session, rt, prosumer, YEAR_START, YEAR_END, "month", None)

    async def floor() -> Any:
        async with rt.db.engine.connect() as conn:
            return (await conn.execute(FLOOR_SQL, {"a": a, "b": b, "region": REGION})).one()

    await floor()  # the same warm database buffers for every measurement
    cold: dict[str, list[float]] = {"overview": [], "yearly": []}
    warm: dict[str, list[float]] = {"overview": [], "yearly": []}
    floors: list[float] = []
    checked = None
    for _ in range(ROUNDS):
        ms, row = await _timed(floor)
        floors.append(ms)
        for name, call in (("overview", overview), ("yearly", yearly)):
            await cache_of(rt).clear()
            ms, answer = await _timed(call)
            cold[name].append(ms)
            ms, again = await _timed(call)
            warm[name].append(ms)
            assert again == answer
            if name == "overview":
                checked = (answer, row)
    answer, row = checked  # type: ignore[misc]
    # The service and the floor agree on the figures.
    assert round(answer.consumed_kwh * 1000) == int(row[0])
    assert round(answer.met_locally_kwh * 1000) == int(row[2])
    assert round(answer.peak_load_kw * 1000) == int(row[3])
    await rt.db.dispose()
    overview_cold = statistics.median(cold["overview"])
    floor_ms = statistics.median(floors)
    return {
        "bench": "analytics",
        "meters": METERS,
        "cold_ms": round(overview_cold, 1),
        "warm_ms": round(statistics.median(warm["overview"]), 2),
        "floor_ms": round(floor_ms, 1),
        "ratio": round(overview_cold / floor_ms, 2),
        "yearly_cold_ms": round(statistics.median(cold["yearly"]), 1),
        "yearly_warm_ms": round(statistics.median(warm["yearly"]), 2),
        "seed_s": round(seed_s, 1),
    }


async def main() -> None:
    url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or DEFAULT_PG
    print(json.dumps(await run(url)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
