"""Notifications: one draft becomes a stored message, a live push and an email, as the
recipient's preferences say.

Every notification is made inside the unit of work of the fact that causes it (or of the job
that follows those facts, see :mod:`gridex.notifications.facts`): the stored row and the email
outbox row commit with it, and the WebSocket push (``notification`` on ``user:<id>``) is
published after that commit. The push is the only at-most-once part; the history holds what a
client that was not connected missed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import User
from gridex.auth.service import Principal
from gridex.core.clock import utc_iso
from gridex.core.errors import NotFound
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.mail.service import queue_email
from gridex.notifications import repository
from gridex.notifications.models import Notification
from gridex.notifications.schemas import (
    NotificationOut,
    NotificationPreferencesOut,
    TestNotificationOut,
)
from gridex.users.schemas import NOTIFICATION_CHANNELS, NOTIFICATION_EVENTS

IN_APP, EMAIL, WEBSOCKET = "in_app", "email", "websocket"
# Alerts and money decisions also go by email unless the person says otherwise; the busy
# trading events stay in the app.
_QUIET = frozenset({"trade_executed", "order_updated", "epoch_cleared", "settlement_completed"})
DEFAULT_CHANNELS: dict[str, list[str]] = {
    event: [IN_APP, WEBSOCKET] if event in _QUIET else [EMAIL, IN_APP, WEBSOCKET]
    for event in sorted(NOTIFICATION_EVENTS)
}
# The preference that alert types without a choice of their own fall back to.
ALERT_EVENT = "alert_raised"


@dataclass(frozen=True, slots=True)
class Draft:
    """A notification to be: ``type`` is the preferences' event type; ``fallback`` the event
    type whose channels apply when the user has not chosen any for ``type``."""

    user_id: uuid.UUID
    type: str
    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None


def channels_for(user: User, event: str, fallback: str | None = None) -> list[str]:
    """The channels ``event`` reaches ``user`` on: their choice for it, else their choice for
    ``fallback``, else the default."""
    chosen: dict[str, list[str]] = (user.preferences or {}).get("notifications") or {}
    if event in chosen:
        return list(chosen[event])
    if fallback is not None and fallback in chosen:
        return list(chosen[fallback])
    return list(DEFAULT_CHANNELS.get(event) or DEFAULT_CHANNELS.get(fallback or "", [IN_APP]))


def _payload(n: Notification) -> dict[str, Any]:
    return NotificationOut.model_validate(n).model_dump(mode="json")


async def deliver(
    session: AsyncSession, rt: Runtime, drafts: Sequence[Draft], *, channels: Iterable[str] = ()
) -> list[tuple[Draft, Notification | None, bool]]:
    """Send ``drafts`` on each recipient's channels (``channels``, when given, instead of the
    preferences). Returns per draft the stored notification (None without ``in_app``) and
    whether an email was queued. Recipients that are suspended or deleted get nothing."""
    users = await repository.recipients(session, [d.user_id for d in drafts])
    now = rt.clock.now()
    forced = sorted(set(channels))
    out: list[tuple[Draft, Notification | None, bool]] = []
    for draft in drafts:
        user = users.get(draft.user_id)
        if user is None:
            continue
        ways = forced or channels_for(user, draft.type, draft.fallback)
        stored: Notification | None = None
        if IN_APP in ways:
            stored = Notification(
                id=uuid.uuid4(),
                user_id=user.id,
                type=draft.type,
                title=draft.title[:200],
                body=draft.body[:2000],
                data=draft.data,
                created_at=now,
                read_at=None,
            )
            session.add(stored)
        if WEBSOCKET in ways:
            live = (
                _payload(stored)
                if stored is not None
                else {
                    "id": None,
                    "type": draft.type,
                    "title": draft.title,
                    "body": draft.body,
                    "data": draft.data,
                    "read_at": None,
                    "created_at": utc_iso(now),
                }
            )
            emit(session, rt.pubsub, [f"user:{user.id}"], "notification", live, now)
        emailed = EMAIL in ways and bool(user.email)
        if emailed and user.email:
            queue_email(
                session,
                rt.settings,
                rt.clock,
                to=user.email,
                subject=f"Gridex: {draft.title}"[:200],
                body=f"{draft.body}\n\n{rt.settings.public_url}\n",
                kind=f"notification:{draft.type}"[:32],
            )
        out.append((draft, stored, emailed))
    await session.flush()
    return out


# --- the user's own notifications -------------------------------------------------------------


async def unread_count(session: AsyncSession, principal: Principal) -> int:
    return await repository.unread_count(session, principal.user.id)


async def mark_read(
    session: AsyncSession, rt: Runtime, principal: Principal, notification_id: uuid.UUID
) -> Notification:
    """Mark one of the caller's notifications read (idempotent); another user's is 404."""
    notification = await repository.own(session, principal.user.id, notification_id)
    if notification is None:
        raise NotFound("No such notification")
    if notification.read_at is None:
        notification.read_at = rt.clock.now()
        await session.flush()
    return notification


async def mark_all_read(session: AsyncSession, rt: Runtime, principal: Principal) -> int:
    return await repository.mark_all_read(session, principal.user.id, rt.clock.now())


def preferences(user: User) -> NotificationPreferencesOut:
    return NotificationPreferencesOut(
        channels={
            event: sorted(channels_for(user, event, ALERT_EVENT if event != ALERT_EVENT else None))
            for event in sorted(NOTIFICATION_EVENTS)
        },
        defaults={event: sorted(ch) for event, ch in DEFAULT_CHANNELS.items()},
    )


async def update_preferences(
    session: AsyncSession, rt: Runtime, principal: Principal, channels: dict[str, list[str]]
) -> NotificationPreferencesOut:
    """Merge ``channels`` into the user's choices (the same ones ``/me/preferences`` shows)."""
    user = principal.user
    prefs = dict(user.preferences or {})
    chosen = dict(prefs.get("notifications") or {})
    chosen.update(channels)
    prefs["notifications"] = chosen
    user.preferences = prefs  # a new dict, so that the JSON column is seen as changed
    user.updated_at = rt.clock.now()
    await session.flush()
    return preferences(user)


async def send_test(
    session: AsyncSession, rt: Runtime, principal: Principal, channels: list[str] | None
) -> TestNotificationOut:
    """A test message on ``channels`` (default: all), whatever the preferences say."""
    ways = channels or sorted(NOTIFICATION_CHANNELS)
    draft = Draft(
        user_id=principal.user.id,
        type="test",
        title="Test notification",
        body="This is a test notification from Gridex: this channel reaches you.",
        data={"channels": ways},
    )
    results = await deliver(session, rt, [draft], channels=ways)
    if not results:  # the caller's account cannot receive (it is signed in, so never)
        raise NotFound("No such user")
    _, stored, emailed = results[0]
    return TestNotificationOut(
        notification=NotificationOut.model_validate(stored) if stored is not None else None,
        channels=ways,
        email_queued=emailed,
    )
