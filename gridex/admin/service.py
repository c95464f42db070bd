"""Views that span domains, for the public and for staff."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.admin import system
from gridex.analytics import repository as analytics_repo
from gridex.audit.service import record
from gridex.auth.models import User
from gridex.billing import service as billing
from gridex.billing.models import InvoiceStatus
from gridex.core.errors import Forbidden, ServiceUnavailable
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.ledger.models import LedgerAccount
from gridex.market.models import RESTING, Epoch, MarketOrder
from gridex.meters.models import Meter
from gridex.meters.repository import owners_meter_totals
from gridex.users import service as users


async def department_summary(session: AsyncSession, name: str) -> dict[str, object]:
    """A department's members by role and region, and the energy of the meters they own."""
    by_role, regions = await users.department_members(session, name)
    meters, consumed_wh, produced_wh = await owners_meter_totals(
        session, select(User.id).where(User.department == name)
    )
    return {
        "name": name,
        "members": sum(by_role.values()),
        "members_by_role": by_role,
        "regions": regions,
        "meters": meters,
        "produced_kwh": wh_to_kwh(produced_wh),
        "consumed_kwh": wh_to_kwh(consumed_wh),
    }


# --- the admin's overview ---------------------------------------------------------------------


async def admin_stats(session: AsyncSession, rt: Runtime) -> dict[str, Any]:
    """Counts across the platform and a health summary, for the admin's front page."""
    now = rt.clock.now()
    day_ago = now - timedelta(days=1)
    by_role = await analytics_repo.users_by(session, User.role)
    by_status = await analytics_repo.users_by(session, User.status)
    meters = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((Meter.online.is_(True), 1), else_=0)), 0),
            ).where(Meter.deleted_at.is_(None))
        )
    ).one()
    open_orders = await session.scalar(select(func.count()).where(MarketOrder.status.in_(RESTING)))
    cleared = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(Epoch.volume_wh), 0)).where(
                Epoch.cleared_at >= day_ago
            )
        )
    ).one()
    trial = await session.scalar(select(func.coalesce(func.sum(LedgerAccount.balance_micros), 0)))
    checks = await system.checks(rt)
    return {
        "as_of": now,
        "users": {
            "total": sum(by_role.values()),
            "by_role": by_role,
            "by_status": by_status,
            "active_24h": await analytics_repo.users_active(session, day_ago, now),
        },
        "meters": {"total": int(meters[0]), "online": int(meters[1])},
        "market": {
            "open_orders": int(open_orders or 0),
            "epochs_cleared_24h": int(cleared[0]),
            "volume_cleared_24h_kwh": wh_to_kwh(int(cleared[1] or 0)),
        },
        "ledger": {"trial_balance": micros_to_money(int(trial or 0)), "balanced": not trial},
        "health": {"status": system.overall(checks), "checks": checks},
        "jobs": [job.name for job in rt.jobs.jobs],
    }


# --- demo data --------------------------------------------------------------------------------

# The app puts here the function that creates the demo community (gridex.demo, a sibling of
# admin): ``(runtime) -> lines``, raising Conflict when the community exists.
DEMO_COMMUNITY = "admin.demo_community"
DemoCommunity = Callable[[Runtime], Awaitable[list[str]]]


async def create_demo_data(rt: Runtime, actor_id: uuid.UUID) -> list[str]:
    """The demo community of `gridex serve --demo`, refused in production (403) and when it
    exists (409). It commits in its own transactions, as on the command line."""
    if rt.settings.env == "production":
        raise Forbidden("Demo data is never created in production")
    create = rt.extensions.get(DEMO_COMMUNITY)
    if create is None:
        raise ServiceUnavailable("Demo data is not available in this process")
    lines: list[str] = await create(rt)  # type: ignore[operator]
    async with rt.db.sessionmaker() as session:
        record(
            session,
            at=rt.clock.now(),
            action="admin.demo_data_created",
            actor_id=actor_id,
            subject_type="system",
            subject_id="demo",
            details={"lines": len(lines)},
        )
        await session.commit()
    return lines


# --- outstanding invoices, for the platform's financial figures --------------------------------


async def outstanding_invoices(session: AsyncSession) -> tuple[int, int]:
    """(invoices not settled yet: issued, overdue or disputed; what they still owe in micros),
    from billing's own figures; the app hands this to analytics (a sibling of billing)."""
    figures = await billing.analytics(session, None, None)
    unsettled = (InvoiceStatus.issued, InvoiceStatus.overdue, InvoiceStatus.disputed)
    count = sum(figures.by_status.get(status.value, 0) for status in unsettled)
    return count, figures.outstanding_micros
