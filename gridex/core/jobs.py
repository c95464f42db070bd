"""Scheduled jobs: APScheduler in-process, one leader per job through a database lease.

Every job can run in ``gridex serve`` or in any number of ``gridex worker`` processes; the lease row
makes sure only one process runs a given job at a time, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import String, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.clock import Clock
from gridex.core.db import Base, Database

log = structlog.get_logger(__name__)


class JobLease(Base):
    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]


JobFunc = Callable[[], Awaitable[object]]
Item = TypeVar("Item")


async def run_each(
    db: Database,
    job: str,
    due: Callable[[AsyncSession], Awaitable[Sequence[Item]]],
    work: Callable[[AsyncSession, Item], Awaitable[bool]],
) -> int:
    """The loop of a batch job: find what is ``due`` (in a transaction of its own, committed, so
    it may also write), then run ``work`` on each item in a transaction of its own, committed
    when it reports done and rolled back when not. Returns how many items were done.

    An item that raises is rolled back and logged, and the loop goes on with the next one: one
    broken item does not hold up the rest, and the next run tries it again.
    """
    async with db.sessionmaker() as session:
        items = await due(session)
        await session.commit()
    done = 0
    for item in items:
        async with db.sessionmaker() as session:
            try:
                finished = await work(session, item)
            except Exception:
                await session.rollback()
                log.exception("job_item_failed", job=job, item=str(item))
                continue
            if finished:
                await session.commit()
                done += 1
            else:
                await session.rollback()
    if done:
        log.info("job_done", job=job, items=done)
    return done


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    func: JobFunc
    interval_seconds: float


class JobRunner:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._jobs: list[Job] = []
        self._scheduler: AsyncIOScheduler | None = None
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: set[str] = set()  # the jobs whose lease this process holds
        # Run before every job (e.g. bring the runtime settings up to date); a failure skips
        # the job's run like a failure of the job itself.
        self._before: list[JobFunc] = []

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs)

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def add(self, name: str, func: JobFunc, *, every_seconds: float) -> None:
        self._jobs.append(Job(name, func, every_seconds))

    def before_each(self, func: JobFunc) -> None:
        """Run ``func`` before each job run."""
        self._before.append(func)

    async def acquire(self, name: str, ttl: timedelta) -> bool:
        """Take or renew the lease of ``name``; False while another live process holds it."""
        now = self._clock.now()
        async with self._db.sessionmaker() as session:
            result = await session.execute(
                update(JobLease)
                .where(
                    JobLease.name == name,
                    (JobLease.holder == self.holder) | (JobLease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=now + ttl, last_run_at=now)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                await session.commit()
                return True
            try:
                await session.execute(
                    insert(JobLease).values(
                        name=name, holder=self.holder, expires_at=now + ttl, last_run_at=now
                    )
                )
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return False
            return True

    async def run_once(self, job: Job) -> bool:
        """Run ``job`` if this process holds its lease; returns whether it ran.

        Taking and losing a lease are logged at info (so the log says which process runs which
        job), each run at debug with its duration, a failure with its traceback.
        """
        ttl = timedelta(seconds=max(job.interval_seconds * 3, 30))
        if not await self.acquire(job.name, ttl):
            if job.name in self._held:
                self._held.discard(job.name)
                log.info("job_lease_lost", job=job.name, holder=self.holder)
            return False
        if job.name not in self._held:
            self._held.add(job.name)
            log.info("job_lease_taken", job=job.name, holder=self.holder)
        started = time.perf_counter()
        try:
            for before in self._before:
                await before()
            await job.func()
        except Exception:
            log.exception("job_failed", job=job.name, holder=self.holder)
        else:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            log.debug("job_ran", job=job.name, holder=self.holder, duration_ms=elapsed_ms)
        return True

    def start(self) -> None:
        scheduler = AsyncIOScheduler(timezone="UTC")
        for job in self._jobs:
            scheduler.add_job(
                self.run_once,
                "interval",
                seconds=job.interval_seconds,
                args=[job],
                id=job.name,
                max_instances=1,
                coalesce=True,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("jobs_started", jobs=[job.name for job in self._jobs], holder=self.holder)

    def shutdown(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None
