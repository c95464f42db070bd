"""Re-settlement after reading corrections: re-run a settled epoch's delivery check and
post only the difference; the job handles each correction once."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.db import insert_or_ignore
from gridex.core.jobs import run_each
from gridex.core.runtime import Runtime
from gridex.core.units import wh_to_kwh
from gridex.ledger import service as ledger
from gridex.ledger.models import EntryType
from gridex.market.models import Epoch, EpochState, SettlementCorrection, SettlementPosition
from gridex.market.settlement.events import emit_settlement, record_settlement
from gridex.market.settlement.metering import energy_in_epoch
from gridex.market.settlement.money import grid_entry
from gridex.market.settlement.rules import MeteredEnergy, delivery_check
from gridex.meters.models import Meter, MeterReading, ReadingCorrection

_BATCH = 100


async def resettle_epoch(session: AsyncSession, rt: Runtime, epoch_id: uuid.UUID) -> int | None:
    """Re-run a settled epoch's delivery check on the readings as they are now and post only
    the difference to what was settled (one ``adjustment`` entry per participant whose charge
    or credit changed, against ``grid``). Returns how many participants changed (0: nothing to
    do, so running it again is harmless), or None when the epoch is not settled.

    The revenue paid out and its attribution to meters stay as settled; prices are the ones
    fixed at settlement.
    """
    now = rt.clock.now()
    started = time.perf_counter()
    # A no-op update takes the epoch's row lock (PostgreSQL) or the write lock (SQLite), so two
    # re-settlements of one epoch run one after the other and the second sees the first's rows.
    locked = await session.execute(
        update(Epoch)
        .where(Epoch.id == epoch_id, Epoch.state == EpochState.settled)
        .values(state=Epoch.state)
        .execution_options(synchronize_session=False)
    )
    if int(locked.rowcount or 0) != 1:  # type: ignore[attr-defined]
        return None
    epoch = await session.get(Epoch, epoch_id, populate_existing=True)
    assert epoch is not None
    positions = list(
        await session.scalars(
            select(SettlementPosition)
            .where(SettlementPosition.epoch_id == epoch.id)
            .order_by(SettlementPosition.user_id)
            .execution_options(populate_existing=True)
        )
    )
    energy = await energy_in_epoch(session, epoch, (p.user_id for p in positions))
    changed = []
    entries: list[ledger.NewEntry] = []
    for position in positions:
        adjustment = _readjust(epoch, position, energy.get(position.user_id, MeteredEnergy()), now)
        if adjustment is not None:
            entries += adjustment
            changed.append(position)
    if entries:
        await ledger.post_entries(session, entries, at=now)
    if changed:
        epoch.settlement_adjustments = (epoch.settlement_adjustments or 0) + 1
        epoch.settlement_adjusted_at = now
    await session.flush()
    if changed:
        emit_settlement(session, rt, epoch, changed, now, adjustment=True)
        record_settlement(session, epoch, changed, started, adjustment=True)
    return len(changed)


def _readjust(
    epoch: Epoch, position: SettlementPosition, metered: MeteredEnergy, now: datetime
) -> list[ledger.NewEntry] | None:
    """One participant's delivery check on ``metered`` as it is now: the adjustment entries of
    the difference to what was charged or credited (None when neither changed), with the
    epoch's record and the stored position brought up to date."""
    check = delivery_check(
        sold_wh=position.sold_wh,
        bought_wh=position.bought_wh,
        exported_wh=metered.exported_wh,
        imported_wh=metered.imported_wh,
        import_price_micros=epoch.settlement_import_price_micros or 0,
        feed_in_price_micros=epoch.settlement_feed_in_price_micros or 0,
    )
    charge_diff = check.charge_micros - position.charged_micros
    credit_diff = check.credit_micros - position.credited_micros
    entries: list[ledger.NewEntry] | None = None
    if charge_diff or credit_diff:
        entries = grid_entry(
            epoch,
            position.user_id,
            credit_diff - charge_diff,
            type=EntryType.adjustment,
            description=(
                f"Re-settlement of epoch {utc_iso(epoch.start)} after a reading correction: "
                f"export {wh_to_kwh(position.exported_wh)} -> "
                f"{wh_to_kwh(metered.exported_wh)} kWh, import "
                f"{wh_to_kwh(position.imported_wh)} -> {wh_to_kwh(metered.imported_wh)} kWh"
            ),
        )
        epoch.settlement_charges_micros = (epoch.settlement_charges_micros or 0) + charge_diff
        epoch.settlement_credits_micros = (epoch.settlement_credits_micros or 0) + credit_diff
    metered_now = (metered.exported_wh, metered.imported_wh)
    if (position.exported_wh, position.imported_wh) != metered_now or entries is not None:
        position.exported_wh, position.imported_wh = metered_now
        position.charged_micros = check.charge_micros
        position.credited_micros = check.credit_micros
        position.updated_at = now
    return entries


async def _affected_epochs(
    session: AsyncSession, correction: ReadingCorrection
) -> list[tuple[uuid.UUID, EpochState]] | None:
    """Epochs of the meter's region that the corrected reading overlaps (before or after the
    correction, whichever interval is longer); None when the meter is gone."""
    meter = await session.get(Meter, correction.meter_id)
    if meter is None:
        return None
    minutes = [int(correction.old_values.get("interval_minutes") or 0)]
    reading = await session.get(MeterReading, (correction.meter_id, correction.timestamp))
    if reading is not None:
        minutes.append(reading.interval_minutes)
    earliest = correction.timestamp - timedelta(minutes=max([*minutes, 1]))
    rows = await session.execute(
        select(Epoch.id, Epoch.state)
        .where(
            Epoch.region == meter.region,
            Epoch.start < correction.timestamp,
            Epoch.end > earliest,
        )
        .order_by(Epoch.start)
    )
    return [(epoch_id, state) for epoch_id, state in rows]


async def process_correction(
    session: AsyncSession, rt: Runtime, correction: ReadingCorrection
) -> bool:
    """Re-settle the settled epochs a correction touches and mark it handled. False (nothing
    written) while one of those epochs is not settled yet: its settlement will read the
    corrected reading, and the correction is looked at again afterwards."""
    epochs = await _affected_epochs(session, correction)
    adjusted = 0
    if epochs is not None:
        if any(state is not EpochState.settled for _, state in epochs):
            return False
        for epoch_id, _ in epochs:
            changed = await resettle_epoch(session, rt, epoch_id)
            if changed is None:  # settled state changed under us: not possible, but be safe
                return False
            adjusted += 1 if changed else 0
    await session.execute(
        insert_or_ignore(session, SettlementCorrection, conflict=["correction_id"]).values(
            correction_id=correction.id,
            processed_at=rt.clock.now(),
            epochs=len(epochs or []),
            adjusted=adjusted,
        )
    )
    return True


async def process_corrections(rt: Runtime) -> int:
    """The re-settlement job: handle reading corrections not handled yet, oldest first, each in
    its own transaction; returns how many were handled. The correction rows are the durable
    events (the live ``reading_corrected`` event may be missed), and re-settlement only posts
    differences, so handling one twice changes nothing."""

    async def pending(session: AsyncSession) -> list[uuid.UUID]:
        handled_already = exists().where(SettlementCorrection.correction_id == ReadingCorrection.id)
        return list(
            await session.scalars(
                select(ReadingCorrection.id)
                .where(~handled_already)
                .order_by(ReadingCorrection.corrected_at, ReadingCorrection.id)
                .limit(_BATCH)
            )
        )

    async def handle(session: AsyncSession, correction_id: uuid.UUID) -> bool:
        correction = await session.get(ReadingCorrection, correction_id)
        return correction is not None and await process_correction(session, rt, correction)

    return await run_each(rt.db, "market_resettlement", pending, handle)
