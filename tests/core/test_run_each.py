"""The one loop of batch jobs: each item in a transaction of its own, committed only when it
reports done; an item that raises is rolled back and the rest still run."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import FrozenClock
from gridex.core.jobs import JobLease, run_each
from gridex.core.runtime import Runtime


async def test_each_item_commits_alone_and_a_failure_stops_nothing(
    runtime: Runtime, clock: FrozenClock
) -> None:
    async def due(session: AsyncSession) -> list[str]:
        # What `due` writes is committed with it (a clearing job closes epochs here).
        await session.execute(
            insert(JobLease).values(name="due", holder="test", expires_at=clock.now())
        )
        return ["done", "raises", "not done", "done too"]

    async def work(session: AsyncSession, item: str) -> bool:
        expires = clock.now() + timedelta(seconds=1)
        await session.execute(insert(JobLease).values(name=item, holder="test", expires_at=expires))
        if item == "raises":
            raise RuntimeError("a broken item")
        return item != "not done"

    assert await run_each(runtime.db, "test_job", due, work) == 2
    async with runtime.db.sessionmaker() as session:
        stored = set(await session.scalars(select(JobLease.name)))
    assert stored == {"due", "done", "done too"}
