"""Alerts: raising (one unresolved alert per type and subject), resolving, the lifecycle
``open -> acknowledged -> resolved`` and the views of owners, operators and admins.

Who sees what: an owner the alerts about them (``user_id``), an operator those of their region
(every region when the operator has none), an admin all; anything else is 404.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import fmean
from typing import Any

from sqlalchemy import ColumnElement, Select, false, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.alerts.models import Alert, AlertStatus, AlertType, Severity, SubjectKind
from gridex.alerts.schemas import (
    AlertAnalyticsOut,
    AlertOut,
    AlertStatsOut,
    BulkAcknowledgeOut,
    SummaryOut,
    TypeAnalyticsOut,
)
from gridex.auth.models import Role
from gridex.auth.service import Principal
from gridex.core.db import insert_or_ignore
from gridex.core.errors import Conflict, NotFound
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.notifications import repository as recipients
from gridex.notifications.service import ALERT_EVENT, Draft, deliver

UNRESOLVED = (AlertStatus.open, AlertStatus.acknowledged)


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition found in the facts: what ``raise_alert`` makes (or keeps) an alert of."""

    type: AlertType
    severity: Severity
    subject_kind: SubjectKind
    subject_id: str
    message: str
    user_id: uuid.UUID | None = None
    meter_id: uuid.UUID | None = None
    region: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # Staff told besides the owner: "region" (the region's operators), "admins", or None.
    staff: str | None = None

    @property
    def open_key(self) -> str:
        return open_key(self.type, self.subject_kind, self.subject_id)


def open_key(kind: AlertType, subject_kind: SubjectKind, subject_id: str) -> str:
    return f"{kind.value}:{subject_kind.value}:{subject_id}"


async def raise_alert(session: AsyncSession, rt: Runtime, c: Condition) -> Alert | None:
    """Open an alert for ``c``, or, while one for its type and subject is unresolved, count the
    condition on that one (newest details, ``occurrences`` + 1). Returns the new alert, None
    when it only counted. A new alert notifies its owner (and staff, per ``c.staff``)."""
    now = rt.clock.now()
    alert_id = uuid.uuid4()
    inserted = await session.scalar(
        insert_or_ignore(session, Alert, conflict=[Alert.open_key])
        .values(
            id=alert_id,
            type=c.type,
            severity=c.severity,
            status=AlertStatus.open,
            subject_kind=c.subject_kind,
            subject_id=c.subject_id,
            open_key=c.open_key,
            user_id=c.user_id,
            meter_id=c.meter_id,
            region=c.region,
            message=c.message[:500],
            details=c.details,
            occurrences=1,
            raised_at=now,
            last_seen_at=now,
        )
        .returning(Alert.id)
    )
    if inserted is None:
        await session.execute(
            update(Alert)
            .where(Alert.open_key == c.open_key)
            .values(
                occurrences=Alert.occurrences + 1,
                last_seen_at=now,
                details=c.details,
                message=c.message[:500],
            )
            .execution_options(synchronize_session=False)
        )
        return None
    alert = await session.get_one(Alert, alert_id)
    await _announce(session, rt, alert, c.staff)
    return alert


async def _announce(session: AsyncSession, rt: Runtime, alert: Alert, staff: str | None) -> None:
    """Notify the owner and the staff concerned of a new alert, and push it live."""
    people: list[uuid.UUID] = [alert.user_id] if alert.user_id else []
    if staff == "region" and alert.region:
        people += await recipients.operators_of(session, alert.region)
    elif staff == "admins" or (alert.user_id is None and not alert.region):
        people += await recipients.admins(session)
    elif alert.user_id is None and alert.region:
        people += await recipients.operators_of(session, alert.region)
    data = {
        "alert_id": str(alert.id),
        "alert_type": alert.type.value,
        "severity": alert.severity.value,
        "subject": {"kind": alert.subject_kind.value, "id": alert.subject_id},
        "region": alert.region,
    }
    title = f"{alert.severity.value.capitalize()}: {alert.type.value.replace('_', ' ')}"
    drafts = [
        Draft(person, alert.type.value, title, alert.message, data, fallback=ALERT_EVENT)
        for person in dict.fromkeys(people)
    ]
    await deliver(session, rt, drafts)
    if alert.user_id is not None:
        payload = AlertOut.model_validate(alert).model_dump(mode="json")
        channel = f"user:{alert.user_id}"
        emit(session, rt.pubsub, [channel], "alert_raised", payload, alert.raised_at)


async def resolve_condition(
    session: AsyncSession,
    rt: Runtime,
    kind: AlertType,
    subject_kind: SubjectKind,
    subject_id: str,
    reason: str,
) -> bool:
    """The condition cleared by itself: resolve its unresolved alert (``resolved_by`` null)."""
    key = open_key(kind, subject_kind, subject_id)
    alert = await session.scalar(select(Alert).where(Alert.open_key == key))
    if alert is None:
        return False
    _resolve(alert, rt.clock.now(), None, reason)
    await session.flush()
    return True


def _resolve(alert: Alert, now: datetime, by: uuid.UUID | None, note: str | None) -> None:
    alert.status = AlertStatus.resolved
    alert.resolved_at = now
    alert.resolved_by = by
    alert.open_key = None
    if note is not None:
        alert.note = note


async def unresolved_of(
    session: AsyncSession, kind: AlertType, subject_kind: SubjectKind | None = None
) -> list[Alert]:
    query = select(Alert).where(Alert.type == kind, Alert.open_key.is_not(None))
    if subject_kind is not None:
        query = query.where(Alert.subject_kind == subject_kind)
    return list(await session.scalars(query))


# --- who sees what ----------------------------------------------------------------------------


def visible_to(principal: Principal) -> ColumnElement[bool]:
    if principal.role == Role.admin:
        return true()
    if principal.role == Role.operator:
        region = principal.user.region
        own = Alert.user_id == principal.user.id
        return true() if region is None else (Alert.region == region) | own
    return Alert.user_id == principal.user.id if principal.user else false()


def alerts_query(
    principal: Principal,
    *,
    region: str | None = None,
    meter_id: uuid.UUID | None = None,
    type: AlertType | None = None,
    severity: Severity | None = None,
    status: AlertStatus | None = None,
    unresolved: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Alert]:
    """The alerts ``principal`` sees, newest first, with the list's filters."""
    query = select(Alert).where(visible_to(principal))
    if region is not None:
        query = query.where(Alert.region == region)
    if meter_id is not None:
        query = query.where(Alert.meter_id == meter_id)
    if type is not None:
        query = query.where(Alert.type == type)
    if severity is not None:
        query = query.where(Alert.severity == severity)
    if status is not None:
        query = query.where(Alert.status == status)
    if unresolved:
        query = query.where(Alert.status.in_(UNRESOLVED))
    if since is not None:
        query = query.where(Alert.raised_at >= since)
    if until is not None:
        query = query.where(Alert.raised_at < until)
    return query.order_by(Alert.raised_at.desc(), Alert.id)


async def get_alert(session: AsyncSession, principal: Principal, alert_id: uuid.UUID) -> Alert:
    alert: Alert | None = await session.scalar(
        select(Alert).where(Alert.id == alert_id, visible_to(principal))
    )
    if alert is None:
        raise NotFound("No such alert")
    return alert


# --- lifecycle --------------------------------------------------------------------------------


async def acknowledge(
    session: AsyncSession, rt: Runtime, principal: Principal, alert_id: uuid.UUID
) -> Alert:
    """``open -> acknowledged`` (again: no change); a resolved alert is 409."""
    alert = await get_alert(session, principal, alert_id)
    if alert.status == AlertStatus.resolved:
        raise Conflict("The alert is resolved", details={"status": alert.status.value})
    if alert.status == AlertStatus.open:
        alert.status = AlertStatus.acknowledged
        alert.acknowledged_at = rt.clock.now()
        alert.acknowledged_by = principal.user.id
        await session.flush()
    return alert


async def resolve(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    alert_id: uuid.UUID,
    note: str | None,
) -> Alert:
    """Resolve an open or acknowledged alert, with who, when and an optional note. A condition
    that is still present raises a new alert when its facts show it again."""
    alert = await get_alert(session, principal, alert_id)
    if alert.status == AlertStatus.resolved:
        raise Conflict("The alert is already resolved", details={"status": alert.status.value})
    _resolve(alert, rt.clock.now(), principal.user.id, note)
    await session.flush()
    return alert


async def bulk_acknowledge(
    session: AsyncSession, rt: Runtime, principal: Principal, ids: Sequence[uuid.UUID]
) -> BulkAcknowledgeOut:
    """Acknowledge every open alert of ``ids``; all or nothing: an id the caller cannot see
    is 404 and changes nothing. Acknowledged and resolved ones are skipped."""
    wanted = list(dict.fromkeys(ids))
    rows = list(
        await session.scalars(select(Alert).where(Alert.id.in_(wanted), visible_to(principal)))
    )
    found = {a.id: a for a in rows}
    missing = [str(i) for i in wanted if i not in found]
    if missing:
        raise NotFound("No such alert", details={"ids": missing})
    now = rt.clock.now()
    done, skipped = [], []
    for alert_id in wanted:
        alert = found[alert_id]
        if alert.status == AlertStatus.open:
            alert.status = AlertStatus.acknowledged
            alert.acknowledged_at, alert.acknowledged_by = now, principal.user.id
            done.append(alert_id)
        else:
            skipped.append(alert_id)
    await session.flush()
    return BulkAcknowledgeOut(acknowledged=done, skipped=skipped)


# --- views ------------------------------------------------------------------------------------


async def summary(session: AsyncSession, principal: Principal) -> SummaryOut:
    rows = (
        await session.execute(
            select(Alert.status, Alert.severity, Alert.type, Alert.raised_at).where(
                visible_to(principal), Alert.status.in_(UNRESOLVED)
            )
        )
    ).all()
    statuses = Counter(r[0].value for r in rows)
    return SummaryOut(
        open=statuses[AlertStatus.open.value],
        acknowledged=statuses[AlertStatus.acknowledged.value],
        unresolved=len(rows),
        by_severity={s.value: sum(1 for r in rows if r[1] == s) for s in Severity},
        by_type=dict(sorted(Counter(r[2].value for r in rows).items())),
        oldest_unresolved_at=min((r[3] for r in rows), default=None),
    )


async def stats(
    session: AsyncSession, principal: Principal, start: datetime, end: datetime
) -> AlertStatsOut:
    rows = (
        await session.execute(
            select(
                Alert.status, Alert.severity, Alert.type, Alert.resolved_at, Alert.resolved_by
            ).where(visible_to(principal), Alert.raised_at >= start, Alert.raised_at < end)
        )
    ).all()
    return AlertStatsOut(
        from_=start,
        to=end,
        raised=len(rows),
        by_status={s.value: sum(1 for r in rows if r[0] == s) for s in AlertStatus},
        by_type=dict(sorted(Counter(r[2].value for r in rows).items())),
        by_severity={s.value: sum(1 for r in rows if r[1] == s) for s in Severity},
        auto_resolved=sum(1 for r in rows if r[3] is not None and r[4] is None),
    )


def _mean_seconds(pairs: list[tuple[datetime, datetime | None]]) -> float | None:
    spans = [(later - first).total_seconds() for first, later in pairs if later is not None]
    return round(fmean(spans), 3) if spans else None


async def analytics(
    session: AsyncSession,
    principal: Principal,
    start: datetime,
    end: datetime,
    region: str | None,
) -> AlertAnalyticsOut:
    """Counts by type and region; mean time to acknowledge (over acknowledged alerts) and to
    resolve (over resolved ones), in seconds from being raised."""
    query = select(
        Alert.type,
        Alert.status,
        Alert.region,
        Alert.raised_at,
        Alert.acknowledged_at,
        Alert.resolved_at,
    ).where(visible_to(principal), Alert.raised_at >= start, Alert.raised_at < end)
    if region is not None:
        query = query.where(Alert.region == region)
    rows = (await session.execute(query)).all()
    by_type = []
    for kind in sorted({r[0] for r in rows}, key=lambda k: k.value):
        mine = [r for r in rows if r[0] == kind]
        by_type.append(
            TypeAnalyticsOut(
                type=kind.value,
                count=len(mine),
                open=sum(1 for r in mine if r[1] == AlertStatus.open),
                acknowledged=sum(1 for r in mine if r[1] == AlertStatus.acknowledged),
                resolved=sum(1 for r in mine if r[1] == AlertStatus.resolved),
                mean_time_to_acknowledge_seconds=_mean_seconds([(r[3], r[4]) for r in mine]),
                mean_time_to_resolve_seconds=_mean_seconds([(r[3], r[5]) for r in mine]),
            )
        )
    return AlertAnalyticsOut(
        from_=start,
        to=end,
        region=region,
        total=len(rows),
        mean_time_to_acknowledge_seconds=_mean_seconds([(r[3], r[4]) for r in rows]),
        mean_time_to_resolve_seconds=_mean_seconds([(r[3], r[5]) for r in rows]),
        by_type=by_type,
        by_region=dict(sorted(Counter(r[2] or "" for r in rows).items())),
    )
