"""Metered energy of an epoch's participants, read from the meters tables, and whether
their readings cover the epoch (the pro-rating rules are in :mod:`.rules`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.market.models import Epoch, Trade
from gridex.market.settlement.rules import Interval, MeteredEnergy, covered, metered_energy
from gridex.meters.models import Meter, MeterReading, MeterStatus

# Readings end at most this long after an epoch and still overlap it (the longest meter
# interval is 15 minutes; the margin costs nothing).
_LONGEST_INTERVAL = timedelta(minutes=60)


async def _participants(session: AsyncSession, epoch_id: uuid.UUID) -> set[uuid.UUID]:
    rows = await session.execute(
        select(Trade.buyer_id, Trade.seller_id).where(Trade.epoch_id == epoch_id)
    )
    return {user for pair in rows for user in pair}


async def _meters(
    session: AsyncSession, region: str, users: Iterable[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID, MeterStatus, datetime | None]]:
    """(meter, owner, status, deleted_at) of the users' meters in the region (deleted ones too:
    their data stays for settlement)."""
    wanted = sorted(set(users))
    if not wanted:
        return []
    rows = await session.execute(
        select(Meter.id, Meter.owner_id, Meter.status, Meter.deleted_at).where(
            Meter.owner_id.in_(wanted), Meter.region == region
        )
    )
    return [(m, o, s, d) for m, o, s, d in rows if o is not None]


async def _readings(
    session: AsyncSession, meter_ids: Sequence[uuid.UUID], start: datetime, end: datetime
) -> list[Interval]:
    """Readings of the meters whose interval may overlap ``[start, end)``."""
    if not meter_ids:
        return []
    rows = await session.execute(
        select(
            MeterReading.meter_id,
            MeterReading.timestamp,
            MeterReading.interval_minutes,
            MeterReading.consumed_wh,
            MeterReading.produced_wh,
        ).where(
            MeterReading.meter_id.in_(sorted(meter_ids)),
            MeterReading.timestamp > start,
            MeterReading.timestamp < end + _LONGEST_INTERVAL,
        )
    )
    return [Interval(*row) for row in rows]


async def energy_in_epoch(
    session: AsyncSession, epoch: Epoch, users: Iterable[uuid.UUID]
) -> dict[uuid.UUID, MeteredEnergy]:
    meters = await _meters(session, epoch.region, users)
    owners = {meter: owner for meter, owner, _, _ in meters}
    readings = await _readings(session, list(owners), epoch.start, epoch.end)
    return metered_energy(readings, owners, epoch.start, epoch.end)


async def readings_complete(session: AsyncSession, epoch: Epoch) -> bool:
    """Whether every reporting meter (not inactive, pending or deleted) of every participant in the
    epoch's region has readings covering the whole epoch."""
    meters = [
        meter
        for meter, _, status, deleted_at in await _meters(
            session, epoch.region, await _participants(session, epoch.id)
        )
        if status not in (MeterStatus.inactive, MeterStatus.pending) and deleted_at is None
    ]
    by_meter: dict[uuid.UUID, list[Interval]] = {meter: [] for meter in meters}
    for reading in await _readings(session, meters, epoch.start, epoch.end):
        by_meter[reading.meter_id].append(reading)
    return all(covered(rs, epoch.start, epoch.end) for rs in by_meter.values())
