"""Views that span domains, for the public and for staff."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import User
from gridex.core.units import wh_to_kwh
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
