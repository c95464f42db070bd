"""Profiles, preferences and the admin's management of accounts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record_account_event
from gridex.auth import service as auth_service
from gridex.auth.models import ApiKey, Role, User, UserStatus
from gridex.auth.service import Principal
from gridex.core.csvexport import write_csv
from gridex.core.errors import Conflict, Forbidden, NotFound
from gridex.core.runtime import Runtime
from gridex.regions.service import require_region
from gridex.users.schemas import AdminUserUpdate, InviteIn, Preferences, ProfileUpdate

DEFAULT_PREFERENCES = Preferences().model_dump()


def _apply_profile(user: User, data: ProfileUpdate) -> dict[str, Any]:
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if field == "metadata":
            user.profile_metadata = value or {}
        elif field == "department_metadata":
            user.department_metadata = value or {}
        elif field == "email":
            user.email = value.lower() if value else None
        else:
            setattr(user, field, value)
    return changes


async def update_profile(
    session: AsyncSession, rt: Runtime, principal: Principal, data: ProfileUpdate
) -> User:
    """A user's own profile. The region is set once (when the account has none, e.g. after a
    wallet sign-in); moving to another region is an operator's decision."""
    user = principal.user
    if "region" in data.model_fields_set and data.region != user.region:
        if user.region is not None:
            raise Forbidden(
                "Moving to another region is an operator's decision; ask your region's operator",
                details={"field": "region", "region": user.region},
            )
        if data.region is not None:
            await require_region(session, data.region)
    changes = _apply_profile(user, data)
    user.updated_at = rt.clock.now()
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.profile_updated",
        user_id=user.id,
        details={"fields": sorted(changes)},
    )
    return user


def get_preferences(user: User) -> Preferences:
    return Preferences.model_validate({**DEFAULT_PREFERENCES, **(user.preferences or {})})


async def put_preferences(
    session: AsyncSession, rt: Runtime, principal: Principal, prefs: Preferences
) -> Preferences:
    principal.user.preferences = prefs.model_dump()
    principal.user.updated_at = rt.clock.now()
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.preferences_updated",
        user_id=principal.user.id,
    )
    return prefs


# --- admin ---------------------------------------------------------------------------------


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user")
    return user


async def invite_user(session: AsyncSession, rt: Runtime, admin: Principal, data: InviteIn) -> User:
    """Create an account for someone else; they set a password with the emailed code."""
    username, email = data.username.lower(), str(data.email).lower()
    await auth_service.ensure_unique(session, username=username, email=email)
    if data.region is not None:
        await require_region(session, data.region)
    now = rt.clock.now()
    user = User(
        username=username,
        email=email,
        role=data.role,
        status=UserStatus.invited,
        first_name=data.first_name,
        last_name=data.last_name,
        department=data.department,
        region=data.region,
        profile_metadata={},
        department_metadata={},
        preferences={},
        invited_by_id=admin.user.id,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    await auth_service.flush_unique(session)
    await auth_service.invite(session, rt, user)
    record_account_event(
        session,
        at=now,
        action="user.invited",
        user_id=user.id,
        actor=admin.user.id,
        details={"role": data.role.value},
    )
    return user


async def admin_update(
    session: AsyncSession,
    rt: Runtime,
    admin: Principal,
    user_id: uuid.UUID,
    data: AdminUserUpdate,
) -> User:
    user = await get_user(session, user_id)
    if data.email is not None:
        await auth_service.ensure_unique(
            session, username=None, email=str(data.email).lower(), exclude=user.id
        )
    if data.region is not None:
        await require_region(session, data.region)
    changes = _apply_profile(user, data)
    user.updated_at = rt.clock.now()
    await auth_service.flush_unique(session)
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.updated",
        user_id=user.id,
        actor=admin.user.id,
        details={"fields": sorted(changes)},
    )
    return user


async def _live_account_of_another(
    session: AsyncSession, admin: Principal, user_id: uuid.UUID, action: str
) -> User:
    """The account an admin acts on: not their own (an admin who demotes or suspends themselves
    can lock everyone out) and not deleted."""
    user = await get_user(session, user_id)
    if admin.user.id == user.id:
        raise Forbidden(f"You cannot {action} your own account")
    if user.status is UserStatus.deleted:
        raise Conflict("The account is deleted")
    return user


async def set_role(
    session: AsyncSession, rt: Runtime, admin: Principal, user_id: uuid.UUID, role: Role
) -> User:
    user = await _live_account_of_another(session, admin, user_id, "change the role of")
    previous = user.role
    user.role = role
    user.updated_at = rt.clock.now()
    # Tokens carry the role; end sessions so the new role applies at once.
    await auth_service.revoke_sessions(session, rt, user.id, reason="role_changed")
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.role_changed",
        user_id=user.id,
        actor=admin.user.id,
        details={"from": previous.value, "to": role.value},
    )
    return user


async def suspend(
    session: AsyncSession, rt: Runtime, admin: Principal, user_id: uuid.UUID, reason: str
) -> User:
    user = await _live_account_of_another(session, admin, user_id, "suspend")
    user.status = UserStatus.suspended
    user.suspended_reason = reason
    user.updated_at = rt.clock.now()
    await auth_service.revoke_sessions(session, rt, user.id, reason="suspended")
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.suspended",
        user_id=user.id,
        actor=admin.user.id,
        details={"reason": reason},
    )
    return user


async def activate(
    session: AsyncSession, rt: Runtime, admin: Principal, user_id: uuid.UUID
) -> User:
    user = await get_user(session, user_id)
    if user.status is UserStatus.deleted:
        raise Conflict("A deleted account cannot be reactivated")
    if user.status is UserStatus.invited:
        raise Conflict("The invited person has not set a password yet")
    user.status = UserStatus.active
    user.suspended_reason = None
    user.failed_login_count, user.locked_until = 0, None
    user.updated_at = rt.clock.now()
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.activated",
        user_id=user.id,
        actor=admin.user.id,
    )
    return user


async def soft_delete(
    session: AsyncSession, rt: Runtime, admin: Principal, user_id: uuid.UUID
) -> None:
    """Delete an account: personal data is anonymised; the row stays for the ledger's sake."""
    user = await get_user(session, user_id)
    if user.status is UserStatus.deleted:
        return
    await _live_account_of_another(session, admin, user_id, "delete")
    now = rt.clock.now()
    short = user.id.hex[:12]
    user.username = f"deleted-{short}"
    user.email = None
    user.password_hash = None
    user.first_name = user.last_name = user.phone = None
    user.wallet_address = None
    user.profile_metadata, user.department_metadata, user.preferences = {}, {}, {}
    user.status = UserStatus.deleted
    user.deleted_at = user.updated_at = now
    await auth_service.revoke_sessions(session, rt, user.id, reason="deleted")
    await session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    record_account_event(
        session,
        at=now,
        action="user.deleted",
        user_id=user.id,
        actor=admin.user.id,
    )


CSV_COLUMNS = (
    "id",
    "username",
    "email",
    "role",
    "status",
    "first_name",
    "last_name",
    "department",
    "region",
    "wallet_address",
    "email_verified",
    "created_at",
    "last_login_at",
)


async def export_csv(session: AsyncSession, query: Select[User]) -> str:
    """The users of ``query`` as CSV (safe to open in a spreadsheet)."""
    users = await session.scalars(query)
    return write_csv(
        CSV_COLUMNS,
        (
            (
                str(user.id),
                user.username,
                user.email,
                user.role.value,
                user.status.value,
                user.first_name,
                user.last_name,
                user.department,
                user.region,
                user.wallet_address,
                user.email_verified,
                user.created_at,
                user.last_login_at,
            )
            for user in users
        ),
    )


async def department_members(session: AsyncSession, name: str) -> tuple[dict[str, int], list[str]]:
    """Members of department ``name`` by role, and the regions they are in (NotFound if none)."""
    rows = (
        await session.execute(
            select(User.role, User.region, func.count())
            .where(User.department == name, User.status != UserStatus.deleted)
            .group_by(User.role, User.region)
        )
    ).all()
    if not rows:
        raise NotFound("No such department")
    by_role: dict[str, int] = {}
    regions: set[str] = set()
    for role, region, count in rows:
        by_role[role.value] = by_role.get(role.value, 0) + count
        if region:
            regions.add(region)
    return by_role, sorted(regions)
