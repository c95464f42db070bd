"""Benchmark of billing: one month of invoices for 1,000 users with 15-minute meters.

Run as ``.venv/bin/python bench/billing.py`` from the repository root, on PostgreSQL from
``GRIDEX_BENCH_DATABASE_URL`` (default: database ``bench`` on the local server, created when
missing; its schema is dropped and rebuilt by the migrations).

The seed (not timed): a region in ``Europe/Berlin`` with a tariff (a 17:00-21:00 peak band), and
``USERS`` users with one bidirectional meter each and a 15-minute reading for every quarter of
March 2026 (2,976 per meter, ~3 million rows; the month has the switch to summer time). Timed:

- ``floor_seconds``: one plain SQL aggregate that sums the same month's import and export per
  user and band (the band from the local hour), after one untimed run to warm the cache;
- ``seconds``: ``POST /billing/cycles/2026-03/generate``'s service call and its commit, which
  issues one invoice per user (lines, tax, totals, daily chart data);
- ``pdf_ms``: one invoice's PDF rendered from the stored invoice.

One JSON line: ``{"bench": "billing", "users", "seconds", "floor_seconds", "ratio", "pdf_ms"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import func, select, text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger import DEFAULT_PG, _prepare_postgres, bench_user
from gridex.app import build_runtime
from gridex.billing import pdf, service
from gridex.billing.models import Invoice
from gridex.core.clock import FrozenClock
from gridex.core.config import Settings
from gridex.core.migrate import upgrade
from gridex.core.runtime import Runtime
from gridex.meters.models import Meter, MeterKind
from gridex.regions.service import create_region
from gridex.tariffs import service as tariffs
from gridex.tariffs.rules import Band

USERS = 1_000
REGION = "bench"
TZ = "Europe/Berlin"
PERIOD = "2026-03"
START = datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # 1 March 00:00 in Berlin
END = datetime(2026, 3, 31, 22, 0, tzinfo=UTC)  # 1 April 00:00 in Berlin

_READINGS = text(
    """
INSERT INTO meter_readings (meter_id, "timestamp", interval_minutes, consumed_wh, produced_wh,
                            source, received_at, revision)
SELECT m.id, ts, 15, (random() * 400)::int, (random() * 250)::int, 'bench', :at, 0
FROM meters m CROSS JOIN generate_series(:first, :last, interval '15 minutes') AS ts
WHERE m.region = :region
"""
)

# The floor: the month's energy per user and band in one aggregate (band from the local hour of
# each reading's interval start).
_FLOOR = text(
    """
SELECT m.owner_id,
       CASE WHEN extract(hour FROM (r."timestamp" - interval '15 minutes') AT TIME ZONE :tz)
                 BETWEEN 17 AND 20 THEN 'peak' ELSE 'standard' END AS band,
       sum(r.consumed_wh), sum(r.produced_wh)
FROM meter_readings r JOIN meters m ON m.id = r.meter_id
WHERE m.region = :region AND r."timestamp" > :start AND r."timestamp" <= :end
GROUP BY 1, 2
"""
)


async def _seed(rt: Runtime, clock: FrozenClock) -> None:
    clock.set(datetime(2026, 1, 15, tzinfo=UTC))
    now = clock.now()
    async with rt.db.sessionmaker() as session:
        await create_region(session, REGION, at=now, timezone=TZ)
        await tariffs.create_schedule(
            session,
            rt,
            SimpleNamespace(user=SimpleNamespace(id=None)),  # type: ignore[arg-type]
            region=REGION,
            import_price_micros=300_000,
            feed_in_price_micros=80_000,
            bands=[Band("peak", 17 * 60, 21 * 60, 450_000)],
            holidays=[],
            effective_from=datetime(2026, 2, 1, tzinfo=UTC),
        )
        users = [bench_user(now, region=REGION) for _ in range(USERS)]
        session.add_all(users)
        await session.flush()
        session.add_all(
            Meter(
                serial=f"SM_BENCH_{i:05d}",
                kind=MeterKind.bidirectional,
                region=REGION,
                owner_id=user.id,
                capacity_w=10_000,
                location={},
                meter_metadata={},
                interval_minutes=15,
                created_at=now,
                updated_at=now,
            )
            for i, user in enumerate(users)
        )
        await session.flush()
        await session.execute(
            _READINGS,
            {
                "region": REGION,
                "first": START.replace(minute=15),
                "last": END,
                "at": now,
            },
        )
        await session.commit()
    async with rt.db.engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE meter_readings"))
        await conn.execute(text("ANALYZE meters"))


async def _floor(rt: Runtime) -> float:
    async with rt.db.sessionmaker() as session:
        params = {"tz": TZ, "region": REGION, "start": START, "end": END}
        started = time.perf_counter()
        rows = (await session.execute(_FLOOR, params)).all()
        seconds = time.perf_counter() - started
    assert len(rows) == USERS * 2, len(rows)
    return seconds


async def run(url: str) -> dict[str, object]:
    await _prepare_postgres(url)
    await asyncio.to_thread(upgrade, url)
    clock = FrozenClock()
    settings = Settings(_env_file=None, env="test", database_url=url, run_jobs=False)
    rt = build_runtime(settings, clock)
    try:
        await _seed(rt, clock)
        clock.set(datetime(2026, 4, 1, 6, 0, tzinfo=UTC))
        await _floor(rt)  # warm the cache for both
        floor = await _floor(rt)
        started = time.perf_counter()
        async with rt.db.sessionmaker() as session:
            result = await service.generate_cycle(session, rt, PERIOD, actor_id=None)
            await session.commit()
        seconds = time.perf_counter() - started
        assert result.issued == USERS, result
        async with rt.db.sessionmaker() as session:
            invoice = (await session.scalars(select(Invoice).limit(1))).one()
            started = time.perf_counter()
            document = await service.pdf_document(session, rt, invoice)
            body = pdf.render(document)
            pdf_ms = (time.perf_counter() - started) * 1000
            assert body.startswith(b"%PDF")
            count = await session.scalar(select(func.count()).select_from(Invoice))
        assert count == USERS
        return {
            "bench": "billing",
            "users": USERS,
            "seconds": round(seconds, 3),
            "floor_seconds": round(floor, 3),
            "ratio": round(seconds / floor, 2),
            "pdf_ms": round(pdf_ms, 1),
        }
    finally:
        await rt.db.dispose()


async def main() -> None:
    url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or DEFAULT_PG
    print(json.dumps(await run(url)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
