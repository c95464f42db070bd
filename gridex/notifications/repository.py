"""Queries of the notifications tables and of the facts notifications are made from."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import Role, User, UserStatus
from gridex.notifications.models import Notification


def history_query(user_id: uuid.UUID, *, unread: bool | None = None) -> Select[Notification]:
    """A user's notifications, newest first; ``unread`` keeps only unread (or read) ones."""
    query = select(Notification).where(Notification.user_id == user_id)
    if unread is True:
        query = query.where(Notification.read_at.is_(None))
    elif unread is False:
        query = query.where(Notification.read_at.is_not(None))
    return query.order_by(Notification.created_at.desc(), Notification.id)


async def unread_count(session: AsyncSession, user_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )
    return int(count or 0)


async def own(
    session: AsyncSession, user_id: uuid.UUID, notification_id: uuid.UUID
) -> Notification | None:
    notification: Notification | None = await session.scalar(
        select(Notification).where(
            Notification.id == notification_id, Notification.user_id == user_id
        )
    )
    return notification


async def mark_all_read(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    result = await session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def recipients(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, User]:
    """The users to notify, by id: active or invited accounts only."""
    if not user_ids:
        return {}
    rows = await session.scalars(
        select(User).where(
            User.id.in_(set(user_ids)), User.status.in_([UserStatus.active, UserStatus.invited])
        )
    )
    return {u.id: u for u in rows}


async def staff_of(session: AsyncSession, region: str | None) -> list[uuid.UUID]:
    """Admins, and the operators of ``region`` (all operators when it is None)."""
    query = select(User.id).where(
        User.status == UserStatus.active, User.role.in_([Role.admin, Role.operator])
    )
    if region is not None:
        query = query.where((User.role == Role.admin) | (User.region == region))
    return list(await session.scalars(query))


async def operators_of(session: AsyncSession, region: str) -> list[uuid.UUID]:
    """The active operators of ``region``."""
    return list(
        await session.scalars(
            select(User.id).where(
                User.status == UserStatus.active, User.role == Role.operator, User.region == region
            )
        )
    )


async def admins(session: AsyncSession) -> list[uuid.UUID]:
    return list(
        await session.scalars(
            select(User.id).where(User.status == UserStatus.active, User.role == Role.admin)
        )
    )
