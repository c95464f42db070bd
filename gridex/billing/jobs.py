"""Scheduled billing: the monthly cycle and the overdue check."""

from __future__ import annotations

from datetime import UTC, timedelta

from gridex.billing import service
from gridex.billing.rules import period_of
from gridex.core.runtime import Runtime


async def generate_last_month(rt: Runtime) -> int:
    """Issue the invoices of the month that ended most recently (every region whose month has
    ended in its own time; idempotent, so running it every hour is safe). Returns how many
    documents it issued."""
    now = rt.clock.now()
    # Some region's previous month: UTC's previous month covers every time zone's last month
    # once that month has ended everywhere (generation skips regions still inside it).
    first_of_month = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    period = period_of(first_of_month - timedelta(days=1), UTC)
    async with rt.db.sessionmaker() as session:
        result = await service.generate_cycle(session, rt, period, actor_id=None)
        await session.commit()
    return result.issued + result.corrections


async def mark_overdue(rt: Runtime) -> int:
    """Mark issued invoices past their due date ``overdue`` (see :func:`service.mark_overdue`)."""
    async with rt.db.sessionmaker() as session:
        count = await service.mark_overdue(session, rt)
        await session.commit()
    return count
