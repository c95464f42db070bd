"""Migration 0006 adds installations.meter_id -> meters.id without losing revenue shares.

On SQLite the key is added by copying the table, whose old copy's deletion would cascade to the
shares; on PostgreSQL by ALTER TABLE (the session database of every PostgreSQL test run is built
by the same migration).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from gridex.auth.models import Role, User, UserStatus
from gridex.core.db import Database
from gridex.core.migrate import alembic_config
from gridex.ledger.models import Installation, InstallationShare
from gridex.meters.models import Meter, MeterKind

BEFORE = ("0003", "0004", "0005_market")
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def _migrate(url: str, *revisions: str) -> None:
    for revision in revisions:
        command.upgrade(alembic_config(url), revision)


async def _installation(db: Database, *, meter_exists: bool) -> tuple[uuid.UUID, uuid.UUID]:
    """An installation with two shares, on a real meter or on an unknown id."""
    async with db.sessionmaker() as session:
        user = User(
            username=f"host-{uuid.uuid4().hex[:8]}",
            role=Role.prosumer,
            status=UserStatus.active,
            profile_metadata={},
            department_metadata={},
            preferences={},
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(user)
        meter_id = uuid.uuid4()
        if meter_exists:
            session.add(
                Meter(
                    id=meter_id,
                    serial=f"SM_{uuid.uuid4().hex[:10]}",
                    kind=MeterKind.bidirectional,
                    region="north",
                    capacity_w=10_000,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        await session.flush()
        installation = uuid.uuid4()
        await session.execute(
            insert(Installation).values(
                id=installation,
                meter_id=meter_id,
                platform_bp=2_000,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await session.execute(
            insert(InstallationShare),
            [
                {
                    "id": uuid.uuid4(),
                    "installation_id": installation,
                    "user_id": user.id,
                    "share_bp": 8_000,
                },
            ],
        )
        await session.commit()
        return installation, meter_id


async def _shares(db: Database) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(InstallationShare)) or 0)


async def test_upgrade_keeps_shares_and_enforces_the_key(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
    await asyncio.to_thread(_migrate, url, *BEFORE)
    db = Database(url)
    try:
        installation, meter = await _installation(db, meter_exists=True)
        await asyncio.to_thread(_migrate, url, "heads")
        assert await _shares(db) == 1
        async with db.sessionmaker() as session:
            row = await session.get(Installation, installation)
            assert row is not None
            assert row.meter_id == meter
            with pytest.raises(IntegrityError):
                await session.execute(
                    insert(Installation).values(
                        id=uuid.uuid4(),
                        meter_id=uuid.uuid4(),
                        platform_bp=10_000,
                        created_at=NOW,
                        updated_at=NOW,
                    )
                )
            await session.rollback()
        # Back to the ledger branch alone (0006 and the other branches go): shares still there.
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")
        assert await _shares(db) == 1
    finally:
        await db.dispose()


async def test_upgrade_refuses_installations_of_unknown_meters(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'orphan.db'}"
    await asyncio.to_thread(_migrate, url, *BEFORE)
    db = Database(url)
    try:
        installation, _ = await _installation(db, meter_exists=False)
        with pytest.raises(RuntimeError, match=f"installation {installation}"):
            await asyncio.to_thread(_migrate, url, "heads")
        assert await _shares(db) == 1
        async with db.engine.connect() as conn:
            version = await conn.scalar(text("SELECT count(*) FROM alembic_version"))
        assert version == 3  # still the three heads before
    finally:
        await db.dispose()
