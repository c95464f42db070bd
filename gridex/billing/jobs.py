"""Scheduled billing: the monthly cycle and the overdue check."""

from __future__ import annotations

from gridex.billing import service
from gridex.core.runtime import Runtime


async def generate_due(rt: Runtime) -> int:
    """Issue each region's previous month once it has ended in the region's time, and issue
    credit notes for what changed since (see :func:`service.generate_due`). Returns how many
    documents it issued."""
    async with rt.db.sessionmaker() as session:
        result = await service.generate_due(session, rt)
        await session.commit()
    return result.issued + result.corrections


async def mark_overdue(rt: Runtime) -> int:
    """Mark issued invoices past their due date ``overdue`` (see :func:`service.mark_overdue`)."""
    async with rt.db.sessionmaker() as session:
        count = await service.mark_overdue(session, rt)
        await session.commit()
    return count
