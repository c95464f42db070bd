"""The alerts job: committed facts become alerts, and conditions that cleared resolve theirs.

Facts that happen once (a meter's liveness transition, a rejected reading, a settlement
shortfall, a chain mismatch) are followed past a cursor with receipts
(:mod:`gridex.notifications.facts`); readings are followed per meter (``alert_meter_watch``);
conditions that are states (a seller offline with open sell orders, a low balance, an overdue
invoice) are evaluated from the current rows each run. Each part runs in its own transaction,
together with the alerts, notifications and emails it makes, so a run that dies before its
commit leaves its facts to the next run and nothing is lost or doubled.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.alerts import rules
from gridex.alerts.models import AlertType, MeterWatch, Severity, SubjectKind
from gridex.alerts.service import Condition, raise_alert, resolve_condition, unresolved_of
from gridex.auth.models import User
from gridex.chain.models import ChainMismatch
from gridex.core.clock import utc_iso
from gridex.core.db import conflict_insert
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.ledger.models import AccountKind, JournalEntry, LedgerAccount, Posting
from gridex.market.models import (
    RESTING,
    Epoch,
    EpochState,
    MarketOrder,
    SettlementPosition,
    Side,
)
from gridex.meters.models import (
    Granularity,
    Meter,
    MeterKind,
    MeterReading,
    MeterRollup,
    MeterStatusEvent,
    RejectedReading,
)
from gridex.meters.rollups import bucket_start
from gridex.notifications.facts import (
    Source,
    advance,
    cast_str,
    follow,
    unseen,
    uuid_key,
    window_start,
)
from gridex.notifications.jobs import SETTLEMENT_BATCH

log = structlog.get_logger(__name__)

BATCH = 2000
METERS_PER_RUN = 500
READINGS_PER_METER = 500
EXPORTING = (MeterKind.production, MeterKind.bidirectional)


# --- invoices: a later domain's facts, handed in by the app -----------------------------------


class OverdueInvoice(Protocol):
    """What the rule reads of an overdue invoice (billing's ``Invoice`` rows are such)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def number(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def due_date(self) -> date: ...
    @property
    def amount_due_micros(self) -> int: ...


# Billing sits beside alerts, not below: the app puts its functions under these names.
# ``OVERDUE_INVOICES(session, now)``: every invoice overdue now.
# ``DUE_INVOICES(session, user_ids, now)``: per user, micros of invoices issued and not paid
# (``user_ids`` None: every user who owes some).
OVERDUE_INVOICES = "alerts.overdue_invoices"
DUE_INVOICES = "alerts.due_invoices"
OverdueInvoices = Callable[[AsyncSession, datetime], Awaitable[Sequence[OverdueInvoice]]]
DueInvoices = Callable[
    [AsyncSession, Sequence[uuid.UUID] | None, datetime], Awaitable[dict[uuid.UUID, int]]
]


# Each source's rows are read past the ones already handled (an anti-join on the receipts), so
# that a burst of more facts than one batch at the same instant (a mass outage) still drains.
STATUS_SOURCE = "alerts:meter_status_events"
REJECTIONS_SOURCE = "alerts:rejected_readings"
MISMATCHES_SOURCE = "alerts:chain_mismatches"


def _lookback(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.settings.alert_lookback_seconds)


# --- meter liveness ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StatusFact:
    event: MeterStatusEvent
    meter: Meter


async def _status_events(session: AsyncSession, since: datetime) -> Sequence[_StatusFact]:
    rows = await session.execute(
        select(MeterStatusEvent, Meter)
        .join(Meter, Meter.id == MeterStatusEvent.meter_id)
        .where(
            MeterStatusEvent.at >= since,
            unseen(STATUS_SOURCE, uuid_key(session, MeterStatusEvent.id)),
        )
        .order_by(MeterStatusEvent.at, MeterStatusEvent.id)
        .limit(BATCH)
    )
    return [_StatusFact(e, m) for e, m in rows.all()]


STATUS_EVENTS: Source[_StatusFact] = Source(
    STATUS_SOURCE,
    _status_events,
    key=lambda f: f.event.id.hex,
    at=lambda f: f.event.at,
)


async def liveness(rt: Runtime, session: AsyncSession) -> int:
    """``device_offline`` from each offline transition; the next online one resolves it (and a
    ``seller_offline_before_gate`` of the meter)."""
    facts = await follow(session, STATUS_EVENTS, rt.clock.now(), _lookback(rt))
    for f in facts:
        meter, event = f.meter, f.event
        subject = str(meter.id)
        if event.status == "offline":
            last = event.details.get("last_reading_at")
            since = f" since {last}" if last else ""
            await raise_alert(
                session,
                rt,
                Condition(
                    AlertType.device_offline,
                    Severity.warning,
                    SubjectKind.meter,
                    subject,
                    f"Meter {meter.serial} is offline: no reading{since} ({event.reason})",
                    user_id=meter.owner_id,
                    meter_id=meter.id,
                    region=meter.region,
                    details={
                        "serial": meter.serial,
                        "reason": event.reason,
                        "offline_at": utc_iso(event.at),
                        **event.details,
                    },
                ),
            )
        elif event.status == "online":
            for kind in (AlertType.device_offline, AlertType.seller_offline_before_gate):
                await resolve_condition(
                    session, rt, kind, SubjectKind.meter, subject, "The meter reports again"
                )
    return len(facts)


# --- rejected readings ------------------------------------------------------------------------


async def _rejections(session: AsyncSession, since: datetime) -> Sequence[RejectedReading]:
    rows = await session.scalars(
        select(RejectedReading)
        .where(
            RejectedReading.received_at >= since,
            RejectedReading.meter_id.is_not(None),
            unseen(REJECTIONS_SOURCE, uuid_key(session, RejectedReading.id)),
        )
        .order_by(RejectedReading.received_at, RejectedReading.id)
        .limit(BATCH)
    )
    return list(rows)


REJECTIONS: Source[RejectedReading] = Source(
    REJECTIONS_SOURCE,
    _rejections,
    key=lambda r: r.id.hex,
    at=lambda r: r.received_at,
)


async def _rejections_in_window(
    session: AsyncSession, meter_ids: Sequence[uuid.UUID], since: datetime
) -> dict[uuid.UUID, tuple[int, list[str]]]:
    rows = await session.execute(
        select(RejectedReading.meter_id, RejectedReading.code, func.count())
        .where(RejectedReading.meter_id.in_(meter_ids), RejectedReading.received_at >= since)
        .group_by(RejectedReading.meter_id, RejectedReading.code)
    )
    out: dict[uuid.UUID, tuple[int, list[str]]] = {}
    for meter_id, code, count in rows:
        total, codes = out.get(cast(uuid.UUID, meter_id), (0, []))
        out[cast(uuid.UUID, meter_id)] = (total + int(count), sorted([*codes, code]))
    return out


async def rejections(rt: Runtime, session: AsyncSession) -> int:
    """``reading_rejected`` once a meter has ``alert_rejections_threshold`` rejected readings
    within the window; resolved when the window holds none any more."""
    s = rt.settings
    now = rt.clock.now()
    window_from = now - timedelta(minutes=s.alert_rejections_window_minutes)
    facts = await follow(session, REJECTIONS, now, _lookback(rt))
    meter_ids = sorted({cast(uuid.UUID, r.meter_id) for r in facts})
    counts = await _rejections_in_window(session, meter_ids, window_from) if meter_ids else {}
    meters = {m.id: m for m in await session.scalars(select(Meter).where(Meter.id.in_(meter_ids)))}
    for meter_id, (count, codes) in counts.items():
        meter = meters.get(meter_id)
        if meter is None or count < s.alert_rejections_threshold:
            continue
        await raise_alert(
            session,
            rt,
            Condition(
                AlertType.reading_rejected,
                Severity.warning,
                SubjectKind.meter,
                str(meter_id),
                f"Meter {meter.serial}: {count} readings rejected in the last "
                f"{s.alert_rejections_window_minutes} minutes ({', '.join(codes)})",
                user_id=meter.owner_id,
                meter_id=meter_id,
                region=meter.region,
                details={
                    "serial": meter.serial,
                    "rejected": count,
                    "codes": codes,
                    "window_minutes": s.alert_rejections_window_minutes,
                },
            ),
        )
    unresolved = await unresolved_of(session, AlertType.reading_rejected, SubjectKind.meter)
    if unresolved:
        ids = [uuid.UUID(a.subject_id) for a in unresolved]
        still = await _rejections_in_window(session, ids, window_from)
        for alert in unresolved:
            if uuid.UUID(alert.subject_id) not in still:
                await resolve_condition(
                    session,
                    rt,
                    AlertType.reading_rejected,
                    SubjectKind.meter,
                    alert.subject_id,
                    "No rejected readings within the window",
                )
    return len(facts)


# --- readings against the meter's profile and voltage range -----------------------------------


def _thresholds(rt: Runtime) -> rules.Thresholds:
    s = rt.settings
    return rules.Thresholds(
        min_days=s.alert_profile_min_days,
        spike_factor=s.alert_spike_factor,
        spike_min_wh=s.alert_spike_min_wh,
        drop_ratio=s.alert_drop_ratio,
        drop_min_expected_wh=s.alert_drop_min_expected_wh,
    )


async def _profile(
    session: AsyncSession, meter: Meter, hour: datetime, days: int
) -> rules.Profile | None:
    """The meter's mean energy per minute in the UTC hour ``hour`` over the ``days`` days
    before it, from its hourly rollups (days without readings in that hour do not count)."""
    starts = [hour - timedelta(days=d) for d in range(1, days + 1)]
    rows = (
        await session.execute(
            select(MeterRollup.consumed_wh, MeterRollup.produced_wh, MeterRollup.readings).where(
                MeterRollup.meter_id == meter.id,
                MeterRollup.granularity == Granularity.h1.value,
                MeterRollup.bucket_start.in_(starts),
                MeterRollup.readings > 0,
            )
        )
    ).all()
    if not rows:
        return None
    minutes = sum(int(r[2]) for r in rows) * meter.interval_minutes
    return rules.Profile(
        consumed_wh_per_minute=sum(int(r[0]) for r in rows) / minutes,
        produced_wh_per_minute=sum(int(r[1]) for r in rows) / minutes,
        days=len(rows),
    )


def _voltage_range(rt: Runtime, region: str) -> tuple[float, float]:
    s = rt.settings
    return s.alert_voltage_ranges.get(region, (s.alert_voltage_min, s.alert_voltage_max))


async def _meters_to_read(
    session: AsyncSession, now: datetime, lookback: timedelta
) -> list[tuple[Meter, datetime]]:
    """Meters with readings newer than the rules have checked, and where to start reading."""
    rows = await session.execute(
        select(Meter, MeterWatch.checked_until)
        .outerjoin(MeterWatch, MeterWatch.meter_id == Meter.id)
        .where(
            Meter.deleted_at.is_(None),
            Meter.last_reading_at.is_not(None),
            (MeterWatch.checked_until.is_(None))
            | (Meter.last_reading_at > MeterWatch.checked_until),
        )
        .order_by(Meter.id)
        .limit(METERS_PER_RUN)
    )
    # A meter seen for the first time: its recent readings only, not its whole history.
    return [(m, checked or now - lookback) for m, checked in rows.all()]


async def _check_reading(
    session: AsyncSession,
    rt: Runtime,
    meter: Meter,
    r: MeterReading,
    profile: rules.Profile | None,
) -> None:
    t = _thresholds(rt)
    subject = str(meter.id)
    at = {"timestamp": utc_iso(r.timestamp), "serial": meter.serial}

    async def judge(kind: AlertType, found: dict[str, Any] | None, message: str) -> None:
        if found is None:
            await resolve_condition(
                session, rt, kind, SubjectKind.meter, subject, "The next reading is normal"
            )
            return
        await raise_alert(
            session,
            rt,
            Condition(
                kind,
                Severity.warning,
                SubjectKind.meter,
                subject,
                message,
                user_id=meter.owner_id,
                meter_id=meter.id,
                region=meter.region,
                details={**at, **found},
            ),
        )

    if meter.kind != MeterKind.production:
        spike = rules.consumption_spike(r.consumed_wh, r.interval_minutes, profile, t)
        expected = spike["expected_wh"] if spike else 0
        await judge(
            AlertType.consumption_spike,
            spike,
            f"Meter {meter.serial} consumed {wh_to_kwh(r.consumed_wh)} kWh in the interval "
            f"ending {utc_iso(r.timestamp)}, about {wh_to_kwh(expected)} kWh is usual then",
        )
    if meter.kind in EXPORTING:
        drop = rules.generation_drop(r.produced_wh, r.interval_minutes, profile, t)
        expected = drop["expected_wh"] if drop else 0
        await judge(
            AlertType.generation_drop,
            drop,
            f"Meter {meter.serial} produced {wh_to_kwh(r.produced_wh)} kWh in the interval "
            f"ending {utc_iso(r.timestamp)}, about {wh_to_kwh(expected)} kWh is usual then",
        )
    low, high = _voltage_range(rt, meter.region)
    outside = rules.voltage_out_of_range(r.voltage, low, high)
    if outside is not None:
        await judge(
            AlertType.voltage_out_of_range,
            {"voltage": r.voltage, "min": low, "max": high} if outside else None,
            f"Meter {meter.serial} measured {r.voltage} V at {utc_iso(r.timestamp)}, outside "
            f"{low:g}-{high:g} V",
        )


async def readings(rt: Runtime, session: AsyncSession) -> int:
    """Each meter's new readings, oldest first: a spike, a drop or a voltage outside the
    region's range raises its alert, a normal reading resolves it."""
    now = rt.clock.now()
    checked = 0
    for meter, start in await _meters_to_read(session, now, _lookback(rt)):
        rows = list(
            await session.scalars(
                select(MeterReading)
                .where(MeterReading.meter_id == meter.id, MeterReading.timestamp > start)
                .order_by(MeterReading.timestamp)
                .limit(READINGS_PER_METER)
            )
        )
        profiles: dict[datetime, rules.Profile | None] = {}
        for r in rows:
            hour = bucket_start(Granularity.h1, r.timestamp - timedelta(microseconds=1))
            if hour not in profiles:
                profiles[hour] = await _profile(
                    session, meter, hour, rt.settings.alert_profile_days
                )
            await _check_reading(session, rt, meter, r, profiles[hour])
        until = rows[-1].timestamp if rows else cast(datetime, meter.last_reading_at)
        stmt = conflict_insert(session, MeterWatch).values(meter_id=meter.id, checked_until=until)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[MeterWatch.meter_id],
                set_={"checked_until": stmt.excluded.checked_until},
            )
        )
        checked += len(rows)
    return checked


# --- settlement shortfalls --------------------------------------------------------------------


async def _shortfalls(
    session: AsyncSession, since: datetime
) -> Sequence[tuple[SettlementPosition, Epoch]]:
    rows = await session.execute(
        select(SettlementPosition, Epoch)
        .join(Epoch, Epoch.id == SettlementPosition.epoch_id)
        .where(SettlementPosition.updated_at >= since, SettlementPosition.charged_micros > 0)
        .order_by(SettlementPosition.updated_at)
        .limit(SETTLEMENT_BATCH)
    )
    return [(p, e) for p, e in rows.all()]


SHORTFALLS: Source[tuple[SettlementPosition, Epoch]] = Source(
    "alerts:settlement_shortfalls",
    _shortfalls,
    key=lambda r: f"{r[0].epoch_id.hex}:{r[0].user_id.hex}:{r[0].updated_at.isoformat()}",
    at=lambda r: r[0].updated_at,
)


async def shortfalls(rt: Runtime, session: AsyncSession) -> int:
    """``settlement_shortfall``: a seller delivered less than it sold and was charged; further
    shortfalls while the alert is unresolved count on it."""
    facts = await follow(session, SHORTFALLS, rt.clock.now(), _lookback(rt))
    for p, epoch in facts:
        short_wh = max(0, p.sold_wh - p.exported_wh)
        await raise_alert(
            session,
            rt,
            Condition(
                AlertType.settlement_shortfall,
                Severity.warning,
                SubjectKind.user,
                str(p.user_id),
                f"You delivered {wh_to_kwh(p.exported_wh)} of the {wh_to_kwh(p.sold_wh)} kWh "
                f"you sold for the epoch starting {utc_iso(epoch.start)}; the shortfall of "
                f"{wh_to_kwh(short_wh)} kWh was charged {micros_to_money(p.charged_micros)}",
                user_id=p.user_id,
                region=epoch.region,
                details={
                    "epoch": utc_iso(epoch.start),
                    "epoch_id": str(epoch.id),
                    "sold_kwh": wh_to_kwh(p.sold_wh),
                    "delivered_kwh": wh_to_kwh(p.exported_wh),
                    "shortfall_kwh": wh_to_kwh(short_wh),
                    "charge": micros_to_money(p.charged_micros),
                },
            ),
        )
    return len(facts)


# --- chain reconciliation ---------------------------------------------------------------------


async def _mismatches(session: AsyncSession, since: datetime) -> Sequence[ChainMismatch]:
    rows = await session.scalars(
        select(ChainMismatch)
        .where(
            ChainMismatch.found_at >= since,
            unseen(MISMATCHES_SOURCE, cast_str(ChainMismatch.id)),
        )
        .order_by(ChainMismatch.found_at, ChainMismatch.id)
        .limit(BATCH)
    )
    return list(rows)


MISMATCHES: Source[ChainMismatch] = Source(
    MISMATCHES_SOURCE, _mismatches, key=lambda m: str(m.id), at=lambda m: m.found_at
)


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


async def mismatches(rt: Runtime, session: AsyncSession) -> int:
    """``chain_mismatch`` for each account whose ledger and chain balances differ (found by
    reconciliation with an empty outbox, so not the mirror's lag); for staff only."""
    facts = await follow(session, MISMATCHES, rt.clock.now(), _lookback(rt))
    for m in facts:
        user_id = _as_uuid(m.account)
        region = (
            await session.scalar(select(User.region).where(User.id == user_id)) if user_id else None
        )
        difference = m.chain_micros - m.ledger_micros
        await raise_alert(
            session,
            rt,
            Condition(
                AlertType.chain_mismatch,
                Severity.critical,
                SubjectKind.user,
                m.account,
                f"Chain balance of {m.account} differs from the ledger by "
                f"{micros_to_money(difference)} (ledger {micros_to_money(m.ledger_micros)}, "
                f"chain {micros_to_money(m.chain_micros)})",
                region=region,
                details={
                    "account": m.account,
                    "ledger": micros_to_money(m.ledger_micros),
                    "chain": micros_to_money(m.chain_micros),
                    "difference": micros_to_money(difference),
                    "found_at": utc_iso(m.found_at),
                },
                staff="admins",
            ),
        )
    return len(facts)


# --- sellers offline before gate closure ------------------------------------------------------


async def sellers_offline(rt: Runtime, session: AsyncSession) -> int:
    """``seller_offline_before_gate``: an exporting meter that is offline while its owner has
    open sell orders in its region whose gate has not closed. The seller and the region's
    operators hear of it while the orders can still be cancelled; it resolves when the meter
    reports again or no such order is left."""
    now = rt.clock.now()
    rows = (
        await session.execute(
            select(
                Meter,
                func.count(MarketOrder.id),
                func.sum(MarketOrder.quantity_wh - MarketOrder.filled_wh),
                func.min(Epoch.gate_closure),
            )
            .join(
                MarketOrder,
                and_(MarketOrder.user_id == Meter.owner_id, MarketOrder.region == Meter.region),
            )
            .join(Epoch, Epoch.id == MarketOrder.epoch_id)
            .where(
                Meter.online.is_(False),
                Meter.deleted_at.is_(None),
                Meter.last_reading_at.is_not(None),
                Meter.kind.in_(EXPORTING),
                MarketOrder.side == Side.sell,
                MarketOrder.status.in_(RESTING),
                Epoch.state == EpochState.open,
                Epoch.gate_closure > now,
            )
            .group_by(Meter.id)
        )
    ).all()
    at_risk = set()
    for meter, orders, open_wh, gate in rows:
        at_risk.add(str(meter.id))
        await raise_alert(
            session,
            rt,
            Condition(
                AlertType.seller_offline_before_gate,
                Severity.critical,
                SubjectKind.meter,
                str(meter.id),
                f"Meter {meter.serial} is offline and its owner has {orders} open sell "
                f"order(s) for {wh_to_kwh(int(open_wh or 0))} kWh; the next gate closes at "
                f"{utc_iso(gate)}: restore the meter or cancel the orders before then",
                user_id=meter.owner_id,
                meter_id=meter.id,
                region=meter.region,
                details={
                    "serial": meter.serial,
                    "open_sell_orders": int(orders),
                    "open_kwh": wh_to_kwh(int(open_wh or 0)),
                    "next_gate_closure": utc_iso(gate),
                },
                staff="region",
            ),
        )
    for alert in await unresolved_of(session, AlertType.seller_offline_before_gate):
        if alert.subject_id not in at_risk:
            await resolve_condition(
                session,
                rt,
                AlertType.seller_offline_before_gate,
                SubjectKind.meter,
                alert.subject_id,
                "The meter reports again or no open sell order is left before gate closure",
            )
    return len(rows)


# --- low balance ------------------------------------------------------------------------------


LOW_BALANCE_CURSOR = "alerts:low_balance"


async def low_balance(rt: Runtime, session: AsyncSession) -> int:
    """``low_balance`` for a user whose available balance is negative (a debt, which blocks
    new buy orders and withdrawals) or below what their issued, unpaid invoices ask. Users are
    looked at when their balance moved (ledger postings past a cursor), while they owe on an
    invoice or have an unresolved ``low_balance``; the alert resolves when the balance covers
    again."""
    now = rt.clock.now()
    since = await window_start(session, LOW_BALANCE_CURSOR, now, _lookback(rt))
    touched = set(
        await session.scalars(
            select(Posting.user_id)
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(JournalEntry.created_at >= since, Posting.user_id.is_not(None))
            .distinct()
        )
    )
    open_alerts = {a.subject_id: a for a in await unresolved_of(session, AlertType.low_balance)}
    # Everyone who owes on an invoice is looked at too: an issued invoice moves no balance.
    due_of = cast(DueInvoices | None, rt.extensions.get(DUE_INVOICES))
    due = await due_of(session, None, now) if due_of is not None else {}
    users = sorted(
        {cast(uuid.UUID, u) for u in touched} | {uuid.UUID(k) for k in open_alerts} | set(due)
    )
    await advance(session, LOW_BALANCE_CURSOR, now, now, _lookback(rt))
    if not users:
        return 0
    available = dict(
        (
            await session.execute(
                select(LedgerAccount.user_id, LedgerAccount.balance_micros).where(
                    LedgerAccount.user_id.in_(users),
                    LedgerAccount.kind == AccountKind.available.value,
                )
            )
        ).all()
    )
    held = dict(
        (
            await session.execute(
                select(MarketOrder.user_id, func.sum(MarketOrder.reserved_micros))
                .where(
                    MarketOrder.user_id.in_(users),
                    MarketOrder.side == Side.buy,
                    MarketOrder.status.in_(RESTING),
                )
                .group_by(MarketOrder.user_id)
            )
        ).all()
    )
    regions = dict(
        (await session.execute(select(User.id, User.region).where(User.id.in_(users)))).all()
    )
    for user_id in users:
        balance = int(available.get(user_id) or 0)
        owed = int(due.get(user_id, 0))
        if balance >= 0 and balance >= owed:
            await resolve_condition(
                session,
                rt,
                AlertType.low_balance,
                SubjectKind.user,
                str(user_id),
                "The available balance covers what is due",
            )
            continue
        if balance < 0:
            message = (
                f"Your available balance is {micros_to_money(balance)}: new buy orders and "
                "withdrawals are blocked until it is topped up"
            )
        else:
            message = (
                f"Your available balance of {micros_to_money(balance)} does not cover "
                f"{micros_to_money(owed)} of unpaid invoices"
            )
        await raise_alert(
            session,
            rt,
            Condition(
                AlertType.low_balance,
                Severity.critical if balance < 0 else Severity.warning,
                SubjectKind.user,
                str(user_id),
                message,
                user_id=user_id,
                region=regions.get(user_id),
                details={
                    "available": micros_to_money(balance),
                    "reserved_for_open_buys": micros_to_money(int(held.get(user_id) or 0)),
                    "invoices_due": micros_to_money(owed),
                },
            ),
        )
    return len(users)


# --- overdue invoices -------------------------------------------------------------------------


async def overdue_invoices(rt: Runtime, session: AsyncSession) -> int:
    """``invoice_overdue`` for each overdue invoice the billing domain reports; resolved when
    it no longer does (paid, resolved, voided). Without billing wired in, nothing."""
    source = cast(OverdueInvoices | None, rt.extensions.get(OVERDUE_INVOICES))
    if source is None:
        return 0
    invoices = await source(session, rt.clock.now())
    current = set()
    for inv in invoices:
        current.add(str(inv.id))
        region = inv.region
        await raise_alert(
            session,
            rt,
            Condition(
                AlertType.invoice_overdue,
                Severity.warning,
                SubjectKind.invoice,
                str(inv.id),
                f"Invoice {inv.number} is overdue since {inv.due_date.isoformat()}: "
                f"{micros_to_money(inv.amount_due_micros)} is unpaid",
                user_id=inv.user_id,
                region=region,
                details={
                    "number": inv.number,
                    "due_date": inv.due_date.isoformat(),
                    "amount_due": micros_to_money(inv.amount_due_micros),
                },
            ),
        )
    for alert in await unresolved_of(session, AlertType.invoice_overdue):
        if alert.subject_id not in current:
            await resolve_condition(
                session,
                rt,
                AlertType.invoice_overdue,
                SubjectKind.invoice,
                alert.subject_id,
                "The invoice is no longer overdue",
            )
    return len(invoices)


Rule = Callable[[Runtime, AsyncSession], Awaitable[int]]
RULES: tuple[Rule, ...] = (
    liveness,
    sellers_offline,
    rejections,
    readings,
    shortfalls,
    mismatches,
    low_balance,
    overdue_invoices,
)


async def run_rule(rt: Runtime, rule: Rule) -> int:
    async with rt.db.sessionmaker() as session:
        done = await rule(rt, session)
        await session.commit()
    return done


async def evaluate(rt: Runtime) -> int:
    """Every rule in turn, each in its own transaction; one that fails is logged and runs
    again next time, the others go on."""
    done = 0
    for rule in RULES:
        try:
            done += await run_rule(rt, rule)
        except Exception:
            log.exception("alert_rule_failed", rule=rule.__name__)
    return done
