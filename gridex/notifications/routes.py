"""Thin HTTP layer of notifications: history, unread count, read marks, preferences, test."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from gridex.auth.deps import CurrentPrincipal
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import NotFound
from gridex.core.pagination import Page, PageDep, paginate
from gridex.core.schemas import raises
from gridex.notifications import repository, service
from gridex.notifications.schemas import (
    NotificationOut,
    NotificationPreferencesIn,
    NotificationPreferencesOut,
    ReadAllOut,
    TestNotificationIn,
    TestNotificationOut,
    UnreadCountOut,
)

notifications_router = APIRouter(prefix="/notifications", tags=["notifications"])


@notifications_router.get("")
async def list_notifications(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    unread: bool | None = None,
) -> Page[NotificationOut]:
    """The caller's notifications, newest first; `unread=true` for the unread ones only."""
    query = repository.history_query(principal.user.id, unread=unread)
    rows, total = await paginate(session, query, page)
    return Page.build([NotificationOut.model_validate(r) for r in rows], total, page)


@notifications_router.get("/unread-count")
async def unread_notifications_count(
    principal: CurrentPrincipal, session: SessionDep
) -> UnreadCountOut:
    """How many of your notifications are unread."""
    return UnreadCountOut(count=await service.unread_count(session, principal))


@notifications_router.post("/read-all")
async def read_all_notifications(
    principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> ReadAllOut:
    """Mark all your unread notifications read; `marked` says how many."""
    return ReadAllOut(marked=await service.mark_all_read(session, rt, principal))


@notifications_router.get("/preferences")
async def get_notification_preferences(principal: CurrentPrincipal) -> NotificationPreferencesOut:
    """The channels (`in_app`, `email`, `websocket`) each event type reaches the caller on."""
    return service.preferences(principal.user)


@notifications_router.put("/preferences")
async def put_notification_preferences(
    body: NotificationPreferencesIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> NotificationPreferencesOut:
    """Choose channels per event type (an empty list silences it); others keep theirs."""
    return await service.update_preferences(session, rt, principal, body.channels)


@notifications_router.post("/test")
async def send_test_notification(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    body: TestNotificationIn | None = None,
) -> TestNotificationOut:
    """Send a test notification on the given channels (default: all of them)."""
    return await service.send_test(session, rt, principal, body.channels if body else None)


@notifications_router.post("/{notification_id}/read", responses=raises(NotFound))
async def mark_notification_read(
    notification_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> NotificationOut:
    """Mark one of your notifications read (another user's is 404)."""
    return NotificationOut.model_validate(
        await service.mark_read(session, rt, principal, notification_id)
    )
