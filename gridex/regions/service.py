"""Which regions exist, and the one check every domain makes before naming one."""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.db import Database, insert_or_ignore
from gridex.core.errors import GridexError, ValidationFailed
from gridex.regions.models import Region


class UnknownRegion(GridexError):
    code, status = "UNKNOWN_REGION", 422
    default_message = "No such region; an admin creates regions"


async def get_region(session: AsyncSession, name: str) -> Region | None:
    return await session.get(Region, name)


async def require_region(session: AsyncSession, name: str) -> Region:
    """The region ``name``, or ``UNKNOWN_REGION`` (422) with the field that named it."""
    region = await get_region(session, name)
    if region is None:
        raise UnknownRegion(
            f"There is no region {name!r}; an admin creates regions",
            details={"field": "region", "region": name},
        )
    return region


async def list_regions(session: AsyncSession) -> list[Region]:
    return list(await session.scalars(select(Region).order_by(Region.name)))


async def region_names(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(Region.name).order_by(Region.name)))


def check_timezone(timezone: str) -> str:
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(
            f"{timezone!r} is not an IANA time zone (e.g. Europe/Berlin)",
            details={"field": "timezone"},
        ) from None
    return timezone


async def create_region(
    session: AsyncSession,
    name: str,
    *,
    at: datetime,
    timezone: str = "UTC",
    actor_id: uuid.UUID | None = None,
) -> tuple[Region, bool]:
    """The region ``name``, created when missing; returns it and whether it was created."""
    existing = await get_region(session, name)
    if existing is not None:
        return existing, False
    region = Region(
        name=name, timezone=check_timezone(timezone), created_at=at, created_by_id=actor_id
    )
    session.add(region)
    await session.flush()
    return region, True


async def ensure_regions(db: Database, names: Iterable[str], at: datetime) -> None:
    """Create the deployment's configured regions that do not exist yet (``GRIDEX_REGIONS``)."""
    rows = [{"name": name, "timezone": "UTC", "created_at": at} for name in names]
    if not rows:
        return
    async with db.sessionmaker() as session:
        await session.execute(insert_or_ignore(session, Region.__table__), rows)
        await session.commit()
