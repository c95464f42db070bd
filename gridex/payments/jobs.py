"""Payment tasks run outside a request (``gridex payments complete``)."""

from __future__ import annotations

import uuid

from gridex.core.clock import SystemClock
from gridex.core.config import Settings
from gridex.core.db import Database
from gridex.payments import service
from gridex.payments.schemas import WebhookOut


async def complete_by_hand(
    settings: Settings, intent_id: uuid.UUID, *, succeeded: bool = True
) -> WebhookOut:
    """Development and test only: sign and apply the provider webhook of ``intent_id`` through
    the webhook code path, in one committed unit of work."""
    from gridex.app import build_runtime

    runtime = build_runtime(settings, SystemClock())
    db: Database = runtime.db
    try:
        async with db.sessionmaker() as session:
            result = await service.complete_intent(session, runtime, intent_id, succeeded=succeeded)
            await session.commit()
            return result
    finally:
        await db.dispose()
