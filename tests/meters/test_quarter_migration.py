"""Migration 0009 drops the quarter-hour rollup rows that 15-minute readings now serve, keeps
those of shorter readings, and rebuilds a row that counted both; downgrade puts them back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import select

from gridex.core.db import Database
from gridex.core.migrate import alembic_config
from gridex.meters.models import Granularity, Meter, MeterKind, MeterReading, MeterRollup
from gridex.meters.rollups import Sums, bucket_start

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def _reading(
    meter_id: uuid.UUID, end: datetime, interval: int, wh: int, **extra: Any
) -> MeterReading:
    return MeterReading(
        meter_id=meter_id,
        timestamp=end,
        interval_minutes=interval,
        consumed_wh=wh,
        produced_wh=wh // 10,
        source="http",
        received_at=NOW,
        revision=0,
        **extra,
    )


def _quarter_rows(readings: Iterable[MeterReading]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Quarter-hour rollup rows of ``readings`` (every reading counted in its quarter)."""
    quarters: dict[datetime, Sums] = {}
    for r in readings:
        start = bucket_start(Granularity.m15, r.timestamp - timedelta(minutes=r.interval_minutes))
        quarters.setdefault(start, Sums()).add(r)
    return {("15m", start): sums.row(r.meter_id, "15m", start) for start, sums in quarters.items()}


async def _stored(db: Database) -> dict[tuple[Any, ...], dict[str, Any]]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(MeterRollup).where(MeterRollup.granularity == Granularity.m15)
        )
        return {
            ("15m", r.bucket_start): Sums.of_rollup(r).row(r.meter_id, "15m", r.bucket_start)
            for r in rows
        }


async def test_quarter_rows_of_15_minute_readings_go_and_come_back(tmp_path: Path) -> None:
    await check_migration(f"sqlite+aiosqlite:///{tmp_path / 'quarters.db'}")


async def check_migration(url: str) -> None:
    """Runs on an empty database (also by hand on PostgreSQL)."""
    config = alembic_config(url)
    await asyncio.to_thread(command.upgrade, config, "0008_ingest_perf")
    db = Database(url)
    try:
        meter_id = uuid.uuid4()
        start = NOW - timedelta(hours=1)
        only_15 = [_reading(meter_id, start + Q, 15, 800, voltage=230.4)]
        only_5 = [
            _reading(meter_id, start + Q + timedelta(minutes=5 * k), 5, 100 * k) for k in (1, 2, 3)
        ]
        # Overlapping intervals in one quarter: accepted at ingest, counted in both places.
        mixed_5 = [_reading(meter_id, start + 2 * Q + timedelta(minutes=5), 5, 300, current=2.5)]
        mixed_15 = [_reading(meter_id, start + 3 * Q, 15, 400, peak_demand_w=9000)]
        readings = only_15 + only_5 + mixed_5 + mixed_15
        old = _quarter_rows(readings)
        async with db.sessionmaker() as session:
            session.add(
                Meter(
                    id=meter_id,
                    serial=f"SM_{meter_id.hex[:10]}",
                    kind=MeterKind.bidirectional,
                    region="north",
                    capacity_w=10_000,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
            await session.flush()
            session.add_all(readings)
            await session.flush()
            session.add_all(MeterRollup(**row) for row in old.values())
            await session.commit()

        await asyncio.to_thread(command.upgrade, config, "0009_raw_quarter_hours")
        assert await _stored(db) == _quarter_rows(only_5 + mixed_5)

        await asyncio.to_thread(command.downgrade, config, "0008_ingest_perf")
        assert await _stored(db) == old
    finally:
        await db.dispose()
