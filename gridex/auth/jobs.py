from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from gridex.auth.models import AuthSession, OtpCode, WalletNonce
from gridex.core.runtime import Runtime


async def purge_expired(rt: Runtime) -> None:
    """Drop spent challenges and codes and long-dead sessions; the audit log keeps the story."""
    now = rt.clock.now()
    async with rt.db.sessionmaker() as session:
        await session.execute(delete(WalletNonce).where(WalletNonce.expires_at < now))
        await session.execute(delete(OtpCode).where(OtpCode.expires_at < now - timedelta(days=1)))
        await session.execute(
            delete(AuthSession).where(AuthSession.expires_at < now - timedelta(days=7))
        )
        await session.commit()
