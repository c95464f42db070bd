"""The two questions the hub asks the database: may this user watch that meter, and which of
its sockets' sessions are still live."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import AuthSession, User, UserStatus
from gridex.meters.models import Meter

# Session ids per query of the liveness check (well under every driver's bind limit).
_CHUNK = 500


async def meter_region_and_owner(
    session: AsyncSession, meter_id: uuid.UUID
) -> tuple[str, uuid.UUID | None] | None:
    """The meter's region and owner, or None when there is no such (live) meter."""
    row = (
        await session.execute(
            select(Meter.region, Meter.owner_id).where(
                Meter.id == meter_id, Meter.deleted_at.is_(None)
            )
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def live_sessions(
    session: AsyncSession, session_ids: Iterable[uuid.UUID], now: datetime
) -> set[uuid.UUID]:
    """Those of ``session_ids`` that are neither revoked nor expired, of an active account."""
    ids = list(session_ids)
    live: set[uuid.UUID] = set()
    for start in range(0, len(ids), _CHUNK):
        rows = await session.scalars(
            select(AuthSession.id)
            .join(User, User.id == AuthSession.user_id)
            .where(
                AuthSession.id.in_(ids[start : start + _CHUNK]),
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > now,
                User.status == UserStatus.active,
            )
        )
        live.update(rows)
    return live
