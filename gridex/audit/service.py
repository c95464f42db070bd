"""The audit trail: one function records, the admin endpoints read."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.models import AuditLog
from gridex.core.context import client_ip_var, request_id_var


def record(
    session: AsyncSession,
    *,
    at: datetime,
    action: str,
    actor_id: uuid.UUID | None,
    actor_type: str = "user",
    subject_type: str | None = None,
    subject_id: object | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """Add an audit record to the caller's unit of work, with the request's IP and id."""
    entry = AuditLog(
        at=at,
        action=action,
        actor_id=actor_id,
        actor_type=actor_type if actor_id is not None or actor_type != "user" else "anonymous",
        subject_type=subject_type,
        subject_id=str(subject_id) if subject_id is not None else None,
        outcome=outcome,
        ip=client_ip_var.get(),
        request_id=request_id_var.get(),
        details=details or {},
    )
    session.add(entry)
    return entry


def record_account_event(
    session: AsyncSession,
    *,
    at: datetime,
    action: str,
    user_id: uuid.UUID,
    actor: uuid.UUID | Literal["self", "nobody"] = "self",
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """Record an event of a user's account (sign-in, password, role ...): the user is the
    subject; the actor is the user (``"self"``), nobody signed in (``"nobody"``), or the staff
    member's id."""
    actor_id = user_id if actor == "self" else None if actor == "nobody" else actor
    return record(
        session,
        at=at,
        action=action,
        actor_id=actor_id,
        subject_type="user",
        subject_id=user_id,
        outcome=outcome,
        details=details,
    )


def audit_query(
    *,
    actor_id: uuid.UUID | None = None,
    involving_user: uuid.UUID | None = None,
    action: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[AuditLog]:
    query = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id)
    if actor_id is not None:
        query = query.where(AuditLog.actor_id == actor_id)
    if involving_user is not None:
        query = query.where(
            or_(
                AuditLog.actor_id == involving_user,
                (AuditLog.subject_type == "user") & (AuditLog.subject_id == str(involving_user)),
            )
        )
    if action:
        query = query.where(AuditLog.action == action)
    if subject_type:
        query = query.where(AuditLog.subject_type == subject_type)
    if subject_id:
        query = query.where(AuditLog.subject_id == subject_id)
    if outcome:
        query = query.where(AuditLog.outcome == outcome)
    if since is not None:
        query = query.where(AuditLog.at >= since)
    if until is not None:
        query = query.where(AuditLog.at < until)
    return query
