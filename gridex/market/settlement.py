"""Delivery and settlement of cleared epochs, and re-settlement after reading corrections.

``cleared -> delivered``: once the epoch's interval has ended and every participant's meters in
the region have readings covering it, or once ``GRIDEX_SETTLEMENT_GRACE_SECONDS`` have passed
since its end (:func:`deliver_due`).

``delivered -> settled`` (:func:`settle_epoch`), in one transaction: each trade's escrowed value
goes to the seller minus the fee (to ``fees``), with the part attributed to meters with revenue
shares passed on to the share holders; each participant's metered energy is checked against what
it traded (a seller's shortfall is charged at the grid import price, a buyer's unconsumed energy
credited at the feed-in price, both against ``grid``); trades become ``settled`` and the epoch
gets its settlement record. The rules themselves are pure functions in
:mod:`gridex.market.settlement_rules`.

A correction of a reading that an already settled epoch used (``meter_reading_corrections``)
re-runs that epoch's delivery check and posts only the difference (:func:`resettle_epoch`);
:func:`process_corrections` is the durable driver: it remembers handled corrections in
``market_settlement_corrections``.

Every claim is a conditional update of the epoch's state, so several workers can run these jobs
at once: a second claim matches no row and writes nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.admin.service import record
from gridex.auth.service import Principal
from gridex.core.clock import utc_iso
from gridex.core.errors import Conflict
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.ledger import service as ledger
from gridex.ledger.installations import shares_of_meter
from gridex.ledger.models import AccountKind, EntryType, ReferenceType, account_id
from gridex.market import repository
from gridex.market.models import (
    Epoch,
    EpochState,
    SettlementCorrection,
    SettlementPosition,
    Trade,
)
from gridex.market.prices import grid_prices
from gridex.market.schemas import EpochOut
from gridex.market.settlement_rules import (
    Interval,
    MeteredEnergy,
    Payout,
    Shares,
    covered,
    delivery_check,
    metered_energy,
    plan_payout,
)
from gridex.meters.models import Meter, MeterReading, MeterStatus, ReadingCorrection

# Readings end at most this long after an epoch and still overlap it (the longest meter
# interval is 15 minutes; the margin costs nothing).
_LONGEST_INTERVAL = timedelta(minutes=60)
_BATCH = 100


# --- reads ------------------------------------------------------------------------------------


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


async def _energy(
    session: AsyncSession, epoch: Epoch, users: Iterable[uuid.UUID]
) -> dict[uuid.UUID, MeteredEnergy]:
    meters = await _meters(session, epoch.region, users)
    owners = {meter: owner for meter, owner, _, _ in meters}
    readings = await _readings(session, list(owners), epoch.start, epoch.end)
    return metered_energy(readings, owners, epoch.start, epoch.end)


async def readings_complete(session: AsyncSession, epoch: Epoch) -> bool:
    """Whether every reporting meter (not inactive, not deleted) of every participant in the
    epoch's region has readings covering the whole epoch."""
    meters = [
        meter
        for meter, _, status, deleted_at in await _meters(
            session, epoch.region, await _participants(session, epoch.id)
        )
        if status is not MeterStatus.inactive and deleted_at is None
    ]
    by_meter: dict[uuid.UUID, list[Interval]] = {meter: [] for meter in meters}
    for reading in await _readings(session, meters, epoch.start, epoch.end):
        by_meter[reading.meter_id].append(reading)
    return all(covered(rs, epoch.start, epoch.end) for rs in by_meter.values())


# --- delivered ----------------------------------------------------------------------------------


def _grace(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.settings.settlement_grace_seconds)


async def deliverable(session: AsyncSession, rt: Runtime, epoch: Epoch, now: datetime) -> bool:
    """A cleared epoch is delivered once its interval has ended and its readings are in, or
    once the grace period after its end has passed."""
    if epoch.state is not EpochState.cleared or now < epoch.end:
        return False
    return now >= epoch.end + _grace(rt) or await readings_complete(session, epoch)


async def _mark_delivered(session: AsyncSession, epoch_id: uuid.UUID) -> bool:
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
            if await deliverable(session, rt, epoch, now) and await _mark_delivered(
                session, epoch.id
            ):
                moved += 1
        await session.commit()
    return moved


# --- settlement ---------------------------------------------------------------------------------


def _epoch_ref(epoch: Epoch) -> ledger.Reference:
    return ledger.Reference(ReferenceType.epoch, epoch.id)


def _legs(amounts: Iterable[tuple[ledger.AccountRef, int, uuid.UUID | None]]) -> list[ledger.Leg]:
    """Legs merged per account, zero amounts left out (the ledger refuses them). The third
    item tags a platform account's posting with the user it concerns."""
    merged: dict[ledger.AccountRef, int] = defaultdict(int)
    tags: dict[ledger.AccountRef, uuid.UUID | None] = {}
    for account, amount, tag in amounts:
        merged[account] += amount
        tags.setdefault(account, None if account.user_id is not None else tag)
    return [
        ledger.Leg(account, amount, tags[account]) for account, amount in merged.items() if amount
    ]


async def _post(
    session: AsyncSession,
    at: datetime,
    type: EntryType,
    legs: list[ledger.Leg],
    description: str,
    reference: ledger.Reference,
) -> None:
    if len(legs) >= 2:
        await ledger.post_entry(
            session, at=at, type=type, legs=legs, description=description, reference=reference
        )


async def _pay_trade(
    session: AsyncSession, epoch: Epoch, trade: Trade, payout: Payout, at: datetime
) -> None:
    """Escrow -> seller and ``fees`` (``settlement_payout``), and escrow -> share holders and
    ``fees`` (``revenue_share``). The escrow legs are tagged with the buyer, whose
    ``escrow_pending`` they empty; the fee legs with the seller, whose revenue they come from."""
    reference = ledger.Reference(ReferenceType.trade, trade.id)
    start = utc_iso(epoch.start)
    own = trade.value_micros - payout.shared_micros
    await _post(
        session,
        at,
        EntryType.settlement_payout,
        _legs(
            [
                (ledger.ESCROW, -own, trade.buyer_id),
                (ledger.FEES, payout.fee_micros, trade.seller_id),
                (ledger.user_account(trade.seller_id), payout.seller_micros, None),
            ]
        ),
        f"Settlement of trade {trade.id} (epoch {start})",
        reference,
    )
    if payout.shared_micros:
        await _post(
            session,
            at,
            EntryType.revenue_share,
            _legs(
                [
                    (ledger.ESCROW, -payout.shared_micros, trade.buyer_id),
                    (ledger.FEES, payout.platform_share_micros, trade.seller_id),
                    *((ledger.user_account(u), a, None) for u, a in sorted(payout.holders.items())),
                ]
            ),
            f"Revenue shares of trade {trade.id} (epoch {start})",
            reference,
        )


async def _move_grid(
    session: AsyncSession,
    epoch: Epoch,
    user_id: uuid.UUID,
    amount_micros: int,
    at: datetime,
    *,
    type: EntryType,
    description: str,
) -> None:
    """``amount > 0``: ``grid`` pays the user; ``< 0``: the user pays ``grid`` (may become a
    debt: the only debit settlement makes from ``available``)."""
    if amount_micros > 0:
        await ledger.credit(
            session,
            at=at,
            user_id=user_id,
            amount_micros=amount_micros,
            source=ledger.GRID,
            type=type,
            description=description,
            reference=_epoch_ref(epoch),
        )
    elif amount_micros < 0:
        await ledger.charge(
            session,
            at=at,
            user_id=user_id,
            amount_micros=-amount_micros,
            destination=ledger.GRID,
            type=type,
            description=description,
            reference=_epoch_ref(epoch),
        )


async def _shares(session: AsyncSession, meters: Iterable[uuid.UUID]) -> dict[uuid.UUID, Shares]:
    out: dict[uuid.UUID, Shares] = {}
    for meter in sorted(set(meters)):
        found = await shares_of_meter(session, meter)
        if found is not None:
            out[meter] = found
    return out


async def _lock(session: AsyncSession, users: Iterable[uuid.UUID]) -> None:
    ids = [ledger.ESCROW.id, ledger.FEES.id, ledger.GRID.id]
    ids += [account_id(AccountKind.available, user) for user in users]
    await repository.lock_accounts(session, ids)


@dataclass(slots=True)
class _Totals:
    paid: int = 0
    fees: int = 0
    shared: int = 0
    charges: int = 0
    credits: int = 0


async def settle_epoch(session: AsyncSession, rt: Runtime, epoch_id: uuid.UUID) -> bool:
    """Settle one delivered epoch in the caller's transaction; False (nothing written) when it
    is not delivered or another worker has settled it already."""
    now = rt.clock.now()
    claimed = await session.execute(
        update(Epoch)
        .where(Epoch.id == epoch_id, Epoch.state == EpochState.delivered)
        .values(state=EpochState.settled, settled_at=now)
        .execution_options(synchronize_session=False)
    )
    if int(claimed.rowcount or 0) != 1:  # type: ignore[attr-defined]
        return False
    epoch = await session.get(Epoch, epoch_id, populate_existing=True)
    assert epoch is not None
    trades = await repository.epoch_trades(session, epoch.id)
    prices = await grid_prices(session, rt, epoch.region, epoch.start)
    sold: dict[uuid.UUID, int] = defaultdict(int)
    bought: dict[uuid.UUID, int] = defaultdict(int)
    for trade in trades:
        sold[trade.seller_id] += trade.quantity_wh
        bought[trade.buyer_id] += trade.quantity_wh
    users = sorted(set(sold) | set(bought))
    energy = await _energy(session, epoch, users)
    exports = {user: energy.get(user, MeteredEnergy()).exported_by_meter for user in sold}
    shares = await _shares(session, (m for by_meter in exports.values() for m in by_meter))
    payouts = [
        plan_payout(
            value_micros=t.value_micros,
            fee_micros=t.fee_micros,
            exported_by_meter=exports[t.seller_id],
            shares={m: shares[m] for m in exports[t.seller_id] if m in shares},
        )
        for t in trades
    ]
    holders = {u for p in payouts for u in p.holders}
    await _lock(session, set(users) | holders)

    totals = _Totals()
    received: dict[uuid.UUID, int] = defaultdict(int)
    fees: dict[uuid.UUID, int] = defaultdict(int)
    for trade, payout in zip(trades, payouts, strict=True):
        await _pay_trade(session, epoch, trade, payout, now)
        totals.paid += trade.value_micros - trade.fee_micros
        totals.fees += trade.fee_micros
        totals.shared += payout.shared_micros
        received[trade.seller_id] += payout.seller_micros
        fees[trade.seller_id] += trade.fee_micros
        for holder, amount in payout.holders.items():
            received[holder] += amount

    positions = []
    for user in users:
        metered = energy.get(user, MeteredEnergy())
        check = delivery_check(
            sold_wh=sold[user],
            bought_wh=bought[user],
            exported_wh=metered.exported_wh,
            imported_wh=metered.imported_wh,
            import_price_micros=prices.import_price_micros,
            feed_in_price_micros=prices.feed_in_price_micros,
        )
        await _move_grid(
            session,
            epoch,
            user,
            -check.charge_micros,
            now,
            type=EntryType.settlement_charge,
            description=(
                f"Delivery shortfall of {wh_to_kwh(check.shortfall_wh)} kWh in epoch "
                f"{utc_iso(epoch.start)} at the grid import price"
            ),
        )
        await _move_grid(
            session,
            epoch,
            user,
            check.credit_micros,
            now,
            type=EntryType.settlement_credit,
            description=(
                f"Unconsumed {wh_to_kwh(check.excess_wh)} kWh bought in epoch "
                f"{utc_iso(epoch.start)}, credited at the feed-in price"
            ),
        )
        totals.charges += check.charge_micros
        totals.credits += check.credit_micros
        positions.append(
            SettlementPosition(
                epoch_id=epoch.id,
                user_id=user,
                sold_wh=sold[user],
                bought_wh=bought[user],
                exported_wh=metered.exported_wh,
                imported_wh=metered.imported_wh,
                received_micros=received.get(user, 0),
                fees_micros=fees.get(user, 0),
                charged_micros=check.charge_micros,
                credited_micros=check.credit_micros,
                updated_at=now,
            )
        )
    session.add_all(positions)
    await session.execute(
        update(Trade)
        .where(Trade.epoch_id == epoch.id)
        .values(settlement_status="settled")
        .execution_options(synchronize_session=False)
    )
    epoch.settlement_paid_micros = totals.paid
    epoch.settlement_fees_micros = totals.fees
    epoch.settlement_shared_micros = totals.shared
    epoch.settlement_charges_micros = totals.charges
    epoch.settlement_credits_micros = totals.credits
    epoch.settlement_import_price_micros = prices.import_price_micros
    epoch.settlement_feed_in_price_micros = prices.feed_in_price_micros
    epoch.settlement_adjustments = 0
    await session.flush()
    _emit(session, rt, epoch, positions, now, adjustment=False)
    return True


async def settle_due(rt: Runtime) -> int:
    """The settlement job: settle every delivered epoch, each in its own transaction."""
    async with rt.db.sessionmaker() as session:
        due = list(
            await session.scalars(
                select(Epoch.id)
                .where(Epoch.state == EpochState.delivered)
                .order_by(Epoch.start)
                .limit(_BATCH)
            )
        )
    settled = 0
    for epoch_id in due:
        async with rt.db.sessionmaker() as session:
            if await settle_epoch(session, rt, epoch_id):
                await session.commit()
                settled += 1
            else:
                await session.rollback()
    return settled


# --- events -------------------------------------------------------------------------------------


def position_event(
    epoch: Epoch, position: SettlementPosition, *, adjustment: bool
) -> dict[str, Any]:
    """A participant's own view of its settlement (after any adjustment)."""
    return {
        "region": epoch.region,
        "epoch": utc_iso(epoch.start),
        "adjustment": adjustment,
        "sold_kwh": wh_to_kwh(position.sold_wh),
        "bought_kwh": wh_to_kwh(position.bought_wh),
        "exported_kwh": wh_to_kwh(position.exported_wh),
        "imported_kwh": wh_to_kwh(position.imported_wh),
        "received": micros_to_money(position.received_micros),
        "fees": micros_to_money(position.fees_micros),
        "charged": micros_to_money(position.charged_micros),
        "credited": micros_to_money(position.credited_micros),
    }


def _emit(
    session: AsyncSession,
    rt: Runtime,
    epoch: Epoch,
    positions: Iterable[SettlementPosition],
    now: datetime,
    *,
    adjustment: bool,
) -> None:
    from gridex.market.service import epoch_out

    public = {**epoch_out(epoch, now).model_dump(mode="json"), "adjustment": adjustment}
    emit(
        session,
        rt.pubsub,
        ("market", f"epoch:{utc_iso(epoch.start)}"),
        "settlement_completed",
        public,
        now,
    )
    for position in positions:
        emit(
            session,
            rt.pubsub,
            (f"user:{position.user_id}",),
            "settlement_completed",
            position_event(epoch, position, adjustment=adjustment),
            now,
        )


# --- re-settlement after corrections ------------------------------------------------------------


async def resettle_epoch(session: AsyncSession, rt: Runtime, epoch_id: uuid.UUID) -> int | None:
    """Re-run a settled epoch's delivery check on the readings as they are now and post only
    the difference to what was settled (one ``adjustment`` entry per participant whose charge
    or credit changed, against ``grid``). Returns how many participants changed (0: nothing to
    do, so running it again is harmless), or None when the epoch is not settled.

    The revenue paid out and its attribution to meters stay as settled; prices are the ones
    fixed at settlement.
    """
    now = rt.clock.now()
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
    energy = await _energy(session, epoch, (p.user_id for p in positions))
    await _lock(session, (p.user_id for p in positions))
    changed = []
    for position in positions:
        metered = energy.get(position.user_id, MeteredEnergy())
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
        if charge_diff or credit_diff:
            await _move_grid(
                session,
                epoch,
                position.user_id,
                credit_diff - charge_diff,
                now,
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
            changed.append(position)
        if (position.exported_wh, position.imported_wh) != (
            metered.exported_wh,
            metered.imported_wh,
        ) or (charge_diff or credit_diff):
            position.exported_wh = metered.exported_wh
            position.imported_wh = metered.imported_wh
            position.charged_micros = check.charge_micros
            position.credited_micros = check.credit_micros
            position.updated_at = now
    if changed:
        epoch.settlement_adjustments = (epoch.settlement_adjustments or 0) + 1
        epoch.settlement_adjusted_at = now
    await session.flush()
    if changed:
        _emit(session, rt, epoch, changed, now, adjustment=True)
    return len(changed)


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


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
        _insert(session)(SettlementCorrection)
        .values(
            correction_id=correction.id,
            processed_at=rt.clock.now(),
            epochs=len(epochs or []),
            adjusted=adjusted,
        )
        .on_conflict_do_nothing(index_elements=["correction_id"])
    )
    return True


async def process_corrections(rt: Runtime) -> int:
    """The re-settlement job: handle reading corrections not handled yet, oldest first, each in
    its own transaction; returns how many were handled. The correction rows are the durable
    events (the live ``reading_corrected`` event may be missed), and re-settlement only posts
    differences, so handling one twice changes nothing."""
    handled_already = exists().where(
        and_(SettlementCorrection.correction_id == ReadingCorrection.id)
    )
    async with rt.db.sessionmaker() as session:
        pending = list(
            await session.scalars(
                select(ReadingCorrection.id)
                .where(~handled_already)
                .order_by(ReadingCorrection.corrected_at, ReadingCorrection.id)
                .limit(_BATCH)
            )
        )
    handled = 0
    for correction_id in pending:
        async with rt.db.sessionmaker() as session:
            correction = await session.get(ReadingCorrection, correction_id)
            if correction is not None and await process_correction(session, rt, correction):
                await session.commit()
                handled += 1
            else:
                await session.rollback()
    return handled


# --- on demand ----------------------------------------------------------------------------------


async def settle_now(
    session: AsyncSession, rt: Runtime, principal: Principal, region: str, start: datetime
) -> EpochOut:
    """Operators: settle an epoch now, the same code as the jobs. A cleared epoch is first
    checked for delivery (interval over and readings in, or grace passed); settling a settled
    epoch again does nothing; anything else is 409 ``CONFLICT``."""
    from gridex.market.service import check_aligned, effective_state, epoch_out, gate_closure_of

    start = check_aligned(start, rt.settings)
    now = rt.clock.now()
    epoch = await repository.get_epoch(session, region, start)
    if epoch is None or epoch.state not in (
        EpochState.cleared,
        EpochState.delivered,
        EpochState.settled,
    ):
        if epoch is not None:
            state = effective_state(epoch, now).value
        else:
            state = "closed" if now >= gate_closure_of(start, rt.settings) else "open"
        raise Conflict(
            "The epoch is not delivered yet: it has not been cleared",
            details={"state": state},
        )
    if epoch.state is EpochState.cleared:
        if not await deliverable(session, rt, epoch, now):
            raise Conflict(
                "The epoch is not delivered yet: its interval has not ended or readings are "
                "missing, and the grace period has not passed",
                details={
                    "state": epoch.state.value,
                    "end": utc_iso(epoch.end),
                    "grace_until": utc_iso(epoch.end + _grace(rt)),
                },
            )
        await _mark_delivered(session, epoch.id)
    settled = await settle_epoch(session, rt, epoch.id)
    record(
        session,
        at=now,
        action="market.epoch_settled",
        actor_id=principal.user.id,
        subject_type="epoch",
        subject_id=f"{region}@{start.isoformat()}",
        outcome="success" if settled else "noop",
    )
    refreshed = await repository.get_epoch(session, region, start)
    assert refreshed is not None
    return epoch_out(refreshed, now)
