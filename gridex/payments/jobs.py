"""Payment tasks run outside a request (``gridex payments complete``)."""

from __future__ import annotations

import uuid

from gridex.core.runtime import Runtime
from gridex.payments import service
from gridex.payments.schemas import WebhookOut


async def complete_by_hand(
    runtime: Runtime, intent_id: uuid.UUID, *, succeeded: bool = True
) -> WebhookOut:
    """Development and test only: sign and apply the provider webhook of ``intent_id`` through
    the webhook code path, in one committed unit of work."""
    async with runtime.db.sessionmaker() as session:
        result = await service.complete_intent(session, runtime, intent_id, succeeded=succeeded)
        await session.commit()
        return result
