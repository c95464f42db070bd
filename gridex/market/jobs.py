"""Scheduled market work: epochs for the trading horizon, and clearing at gate closure."""

from __future__ import annotations

from gridex.core.runtime import Runtime
from gridex.market import clearing, repository, service


async def ensure_horizon(rt: Runtime) -> int:
    """Create every missing epoch up to the horizon for each region with an active meter or
    with market settings; returns how many rows were offered (existing ones are skipped)."""
    async with rt.db.sessionmaker() as session:
        regions = sorted(
            set(await repository.meter_regions(session))
            | set(await repository.configured_regions(session))
        )
        offered = await service.ensure_horizon(session, rt, regions)
        await session.commit()
    return offered


async def clear_due(rt: Runtime) -> int:
    """Clear every epoch past gate closure (see :func:`gridex.market.clearing.clear_due`)."""
    return await clearing.clear_due(rt)
