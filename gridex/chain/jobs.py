"""The chain's scheduled work: follow the journal and send the outbox; reconcile."""

from __future__ import annotations

import time

import structlog
from prometheus_client import Gauge

from gridex.chain.outbox import process_outbox
from gridex.chain.reconcile import Reconciliation, reconcile
from gridex.chain.repository import outbox_depth
from gridex.chain.service import ensure_ready, fund_lane_payers, mirror_journal
from gridex.core.runtime import Runtime

log = structlog.get_logger(__name__)

OUTBOX_DEPTH = Gauge(
    "gridex_chain_outbox_depth",
    "Chain transactions not confirmed or failed yet (pending and submitted)",
    multiprocess_mode="max",
)


# Work one run of the mirror job may do before it yields. The job's lease lasts at least 30 s
# and is renewed when a run starts: a run that stopped after 10 s never outlives it, so no other
# process takes the job over while this one is still sending. A backlog goes on next run.
RUN_BUDGET_SECONDS = 10.0


async def mirror(rt: Runtime) -> int:
    """Enqueue the entries not mirrored yet, then send what is due, for at most
    ``RUN_BUDGET_SECONDS``; returns how many transactions were confirmed."""
    deadline = time.monotonic() + RUN_BUDGET_SECONDS
    while await mirror_journal(rt) and time.monotonic() < deadline:
        pass
    confirmed = await process_outbox(rt, deadline=deadline)
    async with rt.db.sessionmaker() as session:
        OUTBOX_DEPTH.set(await outbox_depth(session))
    return confirmed


async def reconcile_now(rt: Runtime) -> int:
    """Reconcile and record differences; returns how many accounts differ. Also keeps the
    lanes' fee payers funded."""
    chain = await ensure_ready(rt)
    await fund_lane_payers(chain)
    async with rt.db.sessionmaker() as session:
        result = await reconcile(session, chain, rt.clock.now())
        await session.commit()
    if result.mismatches and not result.in_flight:
        log.error("chain_mismatch", accounts=[d.account for d in result.mismatches])
    return len(result.mismatches)


def register(rt: Runtime) -> None:
    if rt.settings.chain == "off":
        return
    rt.jobs.add(
        "chain_mirror", lambda: mirror(rt), every_seconds=rt.settings.chain_outbox_interval_seconds
    )
    rt.jobs.add(
        "chain_reconcile",
        lambda: reconcile_now(rt),
        every_seconds=rt.settings.chain_reconcile_interval_seconds,
    )


async def verify(rt: Runtime) -> Reconciliation:
    """``gridex chain verify``: reconcile without recording (read only)."""
    chain = await ensure_ready(rt)
    async with rt.db.sessionmaker() as session:
        return await reconcile(session, chain, rt.clock.now(), record=False)
