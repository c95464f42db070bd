"""Scheduled market work: epochs for the trading horizon, clearing at gate closure, delivery,
settlement and re-settlement after reading corrections."""

from __future__ import annotations

from gridex.core.runtime import Runtime
from gridex.market import auction, repository, service, settlement
from gridex.regions.service import region_names


async def ensure_horizon(rt: Runtime) -> int:
    """Create every missing epoch up to the horizon for each region with an active meter or
    with market settings (regions exist only as admins create them); returns how many rows were
    offered (existing ones are skipped)."""
    async with rt.db.sessionmaker() as session:
        active = set(await repository.meter_regions(session))
        active |= set(await repository.configured_regions(session))
        regions = sorted(active & set(await region_names(session)))
        offered = await service.ensure_horizon(session, rt, regions)
        await session.commit()
    return offered


async def clear_due(rt: Runtime) -> int:
    """Clear every epoch past gate closure (see :func:`gridex.market.auction.clear_due`)."""
    return await auction.clear_due(rt)


async def deliver_due(rt: Runtime) -> int:
    """Move cleared epochs whose readings are in (or whose grace passed) to delivered (see
    :func:`gridex.market.settlement.deliver_due`)."""
    return await settlement.deliver_due(rt)


async def settle_due(rt: Runtime) -> int:
    """Settle every delivered epoch (see :func:`gridex.market.settlement.settle_due`)."""
    return await settlement.settle_due(rt)


async def resettle_corrections(rt: Runtime) -> int:
    """Re-settle epochs touched by reading corrections (see
    :func:`gridex.market.settlement.process_corrections`)."""
    return await settlement.process_corrections(rt)
