"""Scheduled work of the meters domain: liveness and command timeouts."""

from __future__ import annotations

from sqlalchemy import update

from gridex.core.clock import utc_iso
from gridex.core.runtime import Runtime
from gridex.meters.events import status_changed
from gridex.meters.models import Meter
from gridex.meters.service import time_out_commands


async def mark_offline(rt: Runtime) -> int:
    """Meters whose liveness deadline passed (``GRIDEX_OFFLINE_AFTER_INTERVALS`` intervals with
    no reading) go offline, with a ``meter_status_events`` row for the alerts to raise
    ``device_offline``. The next reading brings them back (see ingest)."""
    now = rt.clock.now()
    async with rt.db.sessionmaker() as session:
        rows = (
            await session.execute(
                update(Meter)
                .where(
                    Meter.online.is_(True),
                    Meter.offline_due_at < now,
                    Meter.deleted_at.is_(None),
                )
                .values(online=False)
                .returning(Meter.id, Meter.last_reading_at)
                .execution_options(synchronize_session=False)
            )
        ).all()
        for meter_id, last in rows:
            details = {
                "last_reading_at": utc_iso(last) if last else None,
                "missed_intervals": rt.settings.offline_after_intervals,
            }
            status_changed(
                session,
                rt.pubsub,
                meter_id,
                "offline",
                reason="missed_intervals",
                details=details,
                now=now,
            )
        await session.commit()
    return len(rows)


async def expire_commands(rt: Runtime) -> int:
    """Commands without an ack by their deadline become ``timeout``."""
    async with rt.db.sessionmaker() as session:
        count = await time_out_commands(session, rt.clock.now())
        await session.commit()
    return count
