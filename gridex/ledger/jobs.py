"""Ledger checks run outside a request: ``gridex ledger verify`` and a periodic verification."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from gridex.core.db import Database
from gridex.ledger import repository

log = structlog.get_logger(__name__)


async def verify_ledger(
    db: Database, progress: Callable[[str], None] | None = None
) -> repository.VerifyReport:
    """Recompute every balance from the postings and check the trial balance (read only)."""
    async with db.sessionmaker() as session:
        report = await repository.verify(session, progress)
    if report.ok:
        log.info("ledger_verified", accounts=report.accounts, entries=report.entries)
    else:
        log.error("ledger_verify_failed", problems=report.problems[:20])
    return report


async def verify_url(
    database_url: str, progress: Callable[[str], None] | None = None
) -> repository.VerifyReport:
    db = Database(database_url)
    try:
        return await verify_ledger(db, progress)
    finally:
        await db.dispose()
