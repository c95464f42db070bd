"""Counters and single-use tokens of sign-in, changed by one atomic statement each.

A read followed by a write in Python loses updates when requests run in parallel (SQLite ignores
``FOR UPDATE``; PostgreSQL does not lock a row that was only read). Each function here is a
single ``UPDATE`` whose ``WHERE`` and ``SET`` do the check and the change together, so parallel
callers are serialised by the database on both backends.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import OtpCode, RefreshToken, User

_NO_SYNC = {"synchronize_session": False}


async def add_failed_login(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Count one more failed sign-in; returns the count including this one."""
    failures = await session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(failed_login_count=User.failed_login_count + 1)
        .returning(User.failed_login_count)
        .execution_options(**_NO_SYNC)
    )
    return int(failures or 0)


async def lock_account(session: AsyncSession, user_id: uuid.UUID, until: datetime) -> None:
    """Lock sign-in until ``until`` and start counting failures afresh."""
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(locked_until=until, failed_login_count=0)
        .execution_options(**_NO_SYNC)
    )


async def spend_otp_attempt(
    session: AsyncSession, otp_id: uuid.UUID, *, max_attempts: int, now: datetime
) -> int | None:
    """A wrong code: count the attempt, and consume the code with the last allowed one. Returns
    the attempts now spent, or None when the code was consumed meanwhile."""
    spent = OtpCode.attempts + 1
    attempts = await session.scalar(
        update(OtpCode)
        .where(OtpCode.id == otp_id, OtpCode.consumed_at.is_(None))
        .values(
            attempts=spent,
            consumed_at=case((spent >= max_attempts, now), else_=OtpCode.consumed_at),
        )
        .returning(OtpCode.attempts)
        .execution_options(**_NO_SYNC)
    )
    return None if attempts is None else int(attempts)


async def consume_otp(
    session: AsyncSession, otp_id: uuid.UUID, *, max_attempts: int, now: datetime
) -> bool:
    """Use a code once: True for the one caller that consumed it."""
    result = await session.execute(
        update(OtpCode)
        .where(
            OtpCode.id == otp_id,
            OtpCode.consumed_at.is_(None),
            OtpCode.attempts < max_attempts,
        )
        .values(consumed_at=now)
        .execution_options(**_NO_SYNC)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def spend_refresh_token(session: AsyncSession, token_id: uuid.UUID, now: datetime) -> bool:
    """Mark a refresh token used: True for the one caller that spent it."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(**_NO_SYNC)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def get_user_by_login(session: AsyncSession, identifier: str) -> User | None:
    """A user by username or email (both stored lower-case)."""
    column = User.email if "@" in identifier else User.username
    return await session.scalar(select(User).where(column == identifier.lower()))
