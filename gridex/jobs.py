"""Every scheduled job of every domain, registered on a runtime's job runner."""

from __future__ import annotations

from gridex.auth.jobs import purge_expired
from gridex.core.runtime import Runtime
from gridex.notifications.service import deliver_pending


def register_jobs(rt: Runtime) -> None:
    rt.jobs.add("email_delivery", lambda: _deliver(rt), every_seconds=5)
    rt.jobs.add("auth_purge", lambda: purge_expired(rt), every_seconds=3600)


async def _deliver(rt: Runtime) -> None:
    await deliver_pending(rt.db, rt.settings, rt.clock)
