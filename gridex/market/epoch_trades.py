"""The public trade list of a cleared epoch: what its ``trades_hash`` covers, in the same
canonical order, so that anyone can recompute the hash (and compare it with the memo of the
epoch's settlement on chain). Order ids are random UUIDs: a member recognises their own, nobody
else learns who traded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.errors import Conflict, NotFound
from gridex.core.runtime import Runtime
from gridex.market import repository
from gridex.market.epochs import check_aligned
from gridex.market.models import EpochState
from gridex.market.schemas import EpochTradeOut, EpochTradesOut

_CLEARED = frozenset({EpochState.cleared, EpochState.delivered, EpochState.settled})


async def epoch_trades(
    session: AsyncSession, rt: Runtime, region: str, start: datetime
) -> EpochTradesOut:
    """404 for an epoch that does not exist, 409 ``CONFLICT`` before it has cleared."""
    start = check_aligned(start, rt.settings)
    epoch = await repository.get_epoch(session, region, start)
    if epoch is None:
        raise NotFound("No such epoch in this region", details={"region": region})
    if epoch.state not in _CLEARED or epoch.trades_hash is None:
        raise Conflict("The epoch has not cleared yet", details={"state": epoch.state.value})
    trades = await repository.epoch_trades(session, epoch.id)
    return EpochTradesOut(
        epoch=epoch.start,
        region=epoch.region,
        trades_hash=epoch.trades_hash,
        trades=[
            EpochTradeOut(
                buy_order_id=t.buy_order_id,
                sell_order_id=t.sell_order_id,
                quantity_wh=t.quantity_wh,
                price_micros=t.price_micros,
            )
            for t in trades
        ],
    )
