"""Every scheduled job of every domain, registered on a runtime's job runner."""

from __future__ import annotations

from gridex.alerts.jobs import evaluate as evaluate_alerts
from gridex.auth.jobs import purge_expired
from gridex.billing import jobs as billing_jobs
from gridex.chain import jobs as chain_jobs
from gridex.core import idempotency
from gridex.core.runtime import Runtime
from gridex.demo import simulate
from gridex.mail.service import deliver_pending
from gridex.market.jobs import (
    clear_due,
    deliver_due,
    ensure_horizon,
    resettle_corrections,
    settle_due,
)
from gridex.meters.jobs import expire_commands, mark_offline
from gridex.notifications.jobs import notify_facts


def register_jobs(rt: Runtime) -> None:
    rt.jobs.add(
        "email_delivery", lambda: deliver_pending(rt.db, rt.settings, rt.clock), every_seconds=5
    )
    rt.jobs.add("auth_purge", lambda: purge_expired(rt), every_seconds=3600)
    rt.jobs.add("meters_offline", lambda: mark_offline(rt), every_seconds=60)
    rt.jobs.add("meter_command_timeouts", lambda: expire_commands(rt), every_seconds=5)
    rt.jobs.add(
        "market_clearing",
        lambda: clear_due(rt),
        every_seconds=rt.settings.market_clearing_interval_seconds,
    )
    rt.jobs.add(
        "market_delivery",
        lambda: deliver_due(rt),
        every_seconds=rt.settings.market_clearing_interval_seconds,
    )
    rt.jobs.add(
        "market_settlement",
        lambda: settle_due(rt),
        every_seconds=rt.settings.market_clearing_interval_seconds,
    )
    rt.jobs.add("market_resettlement", lambda: resettle_corrections(rt), every_seconds=30)
    rt.jobs.add("market_horizon", lambda: ensure_horizon(rt), every_seconds=300)
    chain_jobs.register(rt)
    rt.jobs.add(
        "alerts", lambda: evaluate_alerts(rt), every_seconds=rt.settings.alerts_interval_seconds
    )
    rt.jobs.add(
        "notifications",
        lambda: notify_facts(rt),
        every_seconds=rt.settings.notifications_interval_seconds,
    )
    # Each region's month once it has ended in its time, then a daily re-read for credit notes.
    rt.jobs.add("billing_cycle", lambda: billing_jobs.generate_due(rt), every_seconds=900)
    rt.jobs.add("billing_overdue", lambda: billing_jobs.mark_overdue(rt), every_seconds=3600)
    rt.jobs.add("idempotency_purge", lambda: idempotency.purge_expired(rt), every_seconds=3600)
    if rt.settings.demo_simulation and rt.settings.env != "production":
        rt.jobs.add("demo_simulation", lambda: simulate(rt), every_seconds=60)
