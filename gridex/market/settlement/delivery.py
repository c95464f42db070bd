"""``cleared -> delivered``: once the epoch's interval has ended and its participants'
readings are in, or once ``GRIDEX_SETTLEMENT_GRACE_SECONDS`` have passed since its end."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.runtime import Runtime
from gridex.market.models import Epoch, EpochState
from gridex.market.settlement.metering import readings_complete

_BATCH = 100


def grace(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.settings.settlement_grace_seconds)


async def deliverable(session: AsyncSession, rt: Runtime, epoch: Epoch, now: datetime) -> bool:
    """A cleared epoch is delivered once its interval has ended and its readings are in, or
    once the grace period after its end has passed."""
    if epoch.state is not EpochState.cleared or now < epoch.end:
        return False
    return now >= epoch.end + grace(rt) or await readings_complete(session, epoch)


async def mark_delivered(session: AsyncSession, epoch_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(Epoch)
        .where(Epoch.id == epoch_id, Epoch.state == EpochState.cleared)
        .values(state=EpochState.delivered)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


async def deliver_due(rt: Runtime) -> int:
    """The delivery job: move every deliverable cleared epoch to ``delivered``; returns how
    many moved."""
    now = rt.clock.now()
    moved = 0
    async with rt.db.sessionmaker() as session:
        epochs = list(
            await session.scalars(
                select(Epoch)
                .where(Epoch.state == EpochState.cleared, Epoch.end <= now)
                .order_by(Epoch.start)
                .limit(_BATCH * 5)
            )
        )
        for epoch in epochs:
            if await deliverable(session, rt, epoch, now) and await mark_delivered(
                session, epoch.id
            ):
                moved += 1
        await session.commit()
    return moved
