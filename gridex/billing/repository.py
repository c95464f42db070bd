"""Billing's queries. The month's energy and local trades are summed per user and cell in the
database, in one statement each; invoices, lines, payments and disputes are plain row access.

A cell (see ``rules``) is found for an interval by the interval's start: the cell whose start is
the last one at or before it. PostgreSQL does that search inside the aggregate
(``width_bucket`` over the sorted array of cell starts, a binary search per row); SQLite, the
embedded default for one community, returns the rows and the same search runs here with
``bisect``.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Select, bindparam, func, or_, select, text, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.billing.models import (
    BillingCycle,
    Dispute,
    DisputeStatus,
    DocumentKind,
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceStatus,
)
from gridex.billing.rules import CellEnergy, EntryRow, TradeRow
from gridex.core.db import is_postgres
from gridex.ledger.models import AccountKind, JournalEntry, Posting, ReferenceType, account_id
from gridex.market.models import Epoch, SettlementPosition, Trade
from gridex.meters.models import Granularity, Meter, MeterReading, MeterRollup
from gridex.meters.rollups import QUARTER_MINUTES

# Readings are at most an hour long: a reading ending this long after the month's end may still
# start inside it.
_LONGEST_READING = timedelta(minutes=60)
SETTLEMENT_ENTRY_TYPES = ("settlement_charge", "settlement_credit", "adjustment")

Cells = dict[uuid.UUID, dict[int, CellEnergy]]

_BOUNDS = bindparam("bounds", type_=postgresql.ARRAY(DateTime(timezone=True)))

# The month's metered energy per owner and cell: quarter-hour rollup rows (meters reporting more
# often than every 15 minutes) and readings of 15 minutes or longer, each by its interval start.
_PG_ENERGY = """
WITH m AS (
    SELECT id, owner_id FROM meters WHERE region = :region AND owner_id IS NOT NULL {owner}
), e AS (
    SELECT r.meter_id, r.bucket_start AS s, r.consumed_wh, r.produced_wh
    FROM meter_rollups r JOIN m ON m.id = r.meter_id
    WHERE r.granularity = '15m' AND r.bucket_start >= :start
      AND r.bucket_start < :end
    UNION ALL
    SELECT x.meter_id, x."timestamp" - make_interval(mins => x.interval_minutes),
           x.consumed_wh, x.produced_wh
    FROM meter_readings x JOIN m ON m.id = x.meter_id
    WHERE x.interval_minutes >= 15 AND x."timestamp" > :start
      AND x."timestamp" <= :slack
)
SELECT m.owner_id, width_bucket(e.s, :bounds) - 1 AS cell,
       sum(e.consumed_wh)::int8, sum(e.produced_wh)::int8
FROM e JOIN m ON m.id = e.meter_id
WHERE e.s >= :start AND e.s < :end
GROUP BY 1, 2
"""

# Per owner and cell, what local trades covered: per settled epoch, the lesser of bought and
# metered import, and of sold and metered export (settlement's positions, as last settled).
_PG_LOCAL = """
SELECT p.user_id, width_bucket(ep.start, :bounds) - 1 AS cell,
       sum(LEAST(p.bought_wh, p.imported_wh))::int8, sum(LEAST(p.sold_wh, p.exported_wh))::int8
FROM market_settlement_positions p JOIN market_epochs ep ON ep.id = p.epoch_id
WHERE ep.region = :region AND ep.start >= :start AND ep.start < :end {owner}
GROUP BY 1, 2
"""


def _pg(sql: str, owner: uuid.UUID | None, column: str) -> Any:
    """``sql`` for every owner, or only ``owner`` (``column`` names the owner's column)."""
    clause = f"AND {column} = :owner" if owner is not None else ""
    return text(sql.format(owner=clause)).bindparams(_BOUNDS)


def _cell(bounds: Sequence[datetime], at: datetime) -> int:
    return bisect_right(bounds, at) - 1


async def energy_cells(
    session: AsyncSession,
    region: str,
    bounds: Sequence[datetime],
    end: datetime,
    owner: uuid.UUID | None = None,
) -> Cells:
    """Per owner and cell (``bounds`` are the sorted cell starts, the first is the month's
    start), the metered import and export of the owners' meters in ``region`` (of ``owner``
    only, when given)."""
    out: Cells = defaultdict(dict)
    start = bounds[0]
    if is_postgres(session):
        params: dict[str, Any] = {
            "region": region,
            "start": start,
            "end": end,
            "slack": end + _LONGEST_READING,
            "bounds": list(bounds),
        }
        if owner is not None:
            params["owner"] = owner
        rows = await session.execute(_pg(_PG_ENERGY, owner, "owner_id"), params)
        for owner, cell, consumed, produced in rows:
            out[owner][cell] = CellEnergy(int(consumed), int(produced))
        return out
    meters = select(Meter.id, Meter.owner_id).where(
        Meter.region == region, Meter.owner_id.is_not(None)
    )
    if owner is not None:
        meters = meters.where(Meter.owner_id == owner)
    owners: dict[uuid.UUID, uuid.UUID] = {m: o for m, o in await session.execute(meters) if o}
    if not owners:
        return out
    ids = list(owners)
    rollups = select(
        MeterRollup.meter_id,
        MeterRollup.bucket_start,
        MeterRollup.consumed_wh,
        MeterRollup.produced_wh,
    ).where(
        MeterRollup.meter_id.in_(ids),
        MeterRollup.granularity == Granularity.m15,
        MeterRollup.bucket_start >= start,
        MeterRollup.bucket_start < end,
    )
    readings = select(
        MeterReading.meter_id,
        MeterReading.timestamp,
        MeterReading.interval_minutes,
        MeterReading.consumed_wh,
        MeterReading.produced_wh,
    ).where(
        MeterReading.meter_id.in_(ids),
        MeterReading.interval_minutes >= QUARTER_MINUTES,
        MeterReading.timestamp > start,
        MeterReading.timestamp <= end + _LONGEST_READING,
    )

    def add(meter: uuid.UUID, at: datetime, consumed: int, produced: int) -> None:
        if start <= at < end:
            cell = out[owners[meter]].setdefault(_cell(bounds, at), CellEnergy())
            cell.imported += consumed
            cell.exported += produced

    for meter, at, consumed, produced in await session.execute(rollups):
        add(meter, at, consumed, produced)
    for meter, ts, minutes, consumed, produced in await session.execute(readings):
        add(meter, ts - timedelta(minutes=minutes), consumed, produced)
    return out


async def add_local_cells(
    session: AsyncSession,
    region: str,
    bounds: Sequence[datetime],
    end: datetime,
    cells: Cells,
    owner: uuid.UUID | None = None,
) -> None:
    """Add to ``cells`` what settled local trades covered per user and cell."""
    start = bounds[0]
    if is_postgres(session):
        params: dict[str, Any] = {"region": region, "start": start, "end": end}
        params["bounds"] = list(bounds)
        if owner is not None:
            params["owner"] = owner
        rows: Any = await session.execute(_pg(_PG_LOCAL, owner, "p.user_id"), params)
        keyed = [(user, cell, bought, sold) for user, cell, bought, sold in rows]
    else:
        result = await session.execute(
            select(
                SettlementPosition.user_id,
                Epoch.start,
                SettlementPosition.bought_wh,
                SettlementPosition.imported_wh,
                SettlementPosition.sold_wh,
                SettlementPosition.exported_wh,
            )
            .join(Epoch, Epoch.id == SettlementPosition.epoch_id)
            .where(Epoch.region == region, Epoch.start >= start, Epoch.start < end)
            .where(SettlementPosition.user_id == owner if owner is not None else true())
        )
        keyed = [
            (user, _cell(bounds, at), min(bought, imported), min(sold, exported))
            for user, at, bought, imported, sold, exported in result
        ]
    for user, cell, bought, sold in keyed:
        energy = cells[user].setdefault(cell, CellEnergy())
        energy.bought_used += int(bought)
        energy.sold_delivered += int(sold)


async def settled_trades(
    session: AsyncSession,
    region: str,
    start: datetime,
    end: datetime,
    owner: uuid.UUID | None = None,
) -> list[TradeRow]:
    """The settled trades of the region's epochs that start in ``[start, end)`` (of ``owner``,
    as buyer or seller, when given)."""
    mine = true() if owner is None else or_(Trade.buyer_id == owner, Trade.seller_id == owner)
    rows = await session.execute(
        select(
            Trade.id,
            Trade.buyer_id,
            Trade.seller_id,
            Trade.quantity_wh,
            Trade.value_micros,
            Trade.fee_micros,
        )
        .where(
            Trade.region == region,
            Trade.epoch_start >= start,
            Trade.epoch_start < end,
            Trade.settlement_status == "settled",
            mine,
        )
        .order_by(Trade.epoch_start, Trade.id)
    )
    return [TradeRow(*row) for row in rows]


async def settlement_entries(
    session: AsyncSession,
    region: str,
    start: datetime,
    end: datetime,
    owner: uuid.UUID | None = None,
) -> list[EntryRow]:
    """Settlement charges, feed-in credits and re-settlement adjustments of the region's epochs
    starting in ``[start, end)``, as postings on the users' ``available`` accounts.

    Entries name their epoch (``reference_id``); they are written at or after the epoch's end,
    so the scan starts at the month's start and keeps the ones whose epoch is in the month.
    """
    epochs = {
        str(epoch_id)
        for epoch_id in await session.scalars(
            select(Epoch.id).where(Epoch.region == region, Epoch.start >= start, Epoch.start < end)
        )
    }
    if not epochs:
        return []
    rows = await session.execute(
        select(
            JournalEntry.id,
            JournalEntry.reference_id,
            Posting.user_id,
            Posting.account_id,
            JournalEntry.type,
            Posting.amount_micros,
        )
        .join(Posting, Posting.entry_id == JournalEntry.id)
        .where(
            JournalEntry.type.in_(SETTLEMENT_ENTRY_TYPES),
            JournalEntry.reference_type == ReferenceType.epoch.value,
            JournalEntry.created_at >= start,
            Posting.user_id.is_not(None) if owner is None else Posting.user_id == owner,
        )
        .order_by(JournalEntry.created_at, JournalEntry.id)
    )
    return [
        EntryRow(entry, user, type, amount)
        for entry, reference, user, account, type, amount in rows
        if user is not None
        and reference in epochs
        and account == account_id(AccountKind.available, user)
    ]


async def region_meters(session: AsyncSession, region: str) -> dict[uuid.UUID, list[Meter]]:
    """The meters of the region per owner."""
    out: dict[uuid.UUID, list[Meter]] = defaultdict(list)
    for meter in await session.scalars(
        select(Meter)
        .where(Meter.region == region, Meter.owner_id.is_not(None))
        .order_by(Meter.serial)
    ):
        assert meter.owner_id is not None
        out[meter.owner_id].append(meter)
    return out


async def region_meters_of(session: AsyncSession, owner: uuid.UUID) -> dict[str, list[Meter]]:
    """The owner's meters per region."""
    out: dict[str, list[Meter]] = defaultdict(list)
    for meter in await session.scalars(
        select(Meter).where(Meter.owner_id == owner).order_by(Meter.serial)
    ):
        out[meter.region].append(meter)
    return out


# --- invoices ------------------------------------------------------------------------------


async def lock_cycle(session: AsyncSession, region: str, period: str) -> BillingCycle | None:
    query = select(BillingCycle).where(BillingCycle.region == region, BillingCycle.period == period)
    if is_postgres(session):
        query = query.with_for_update()
    return (await session.scalars(query)).one_or_none()


async def documents_of_period(
    session: AsyncSession, region: str, period: str
) -> dict[uuid.UUID, list[Invoice]]:
    """Per user, the invoice of the month and its corrections, in sequence order."""
    out: dict[uuid.UUID, list[Invoice]] = defaultdict(list)
    for invoice in await session.scalars(
        select(Invoice)
        .where(Invoice.region == region, Invoice.period == period)
        .order_by(Invoice.user_id, Invoice.sequence)
    ):
        out[invoice.user_id].append(invoice)
    return out


async def lines_of(
    session: AsyncSession, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[InvoiceLine]]:
    out: dict[uuid.UUID, list[InvoiceLine]] = defaultdict(list)
    if not invoice_ids:
        return out
    for line in await session.scalars(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id.in_(invoice_ids))
        .order_by(InvoiceLine.invoice_id, InvoiceLine.position)
    ):
        out[line.invoice_id].append(line)
    return out


async def get_invoice(
    session: AsyncSession, invoice_id: uuid.UUID, *, lock: bool = False
) -> Invoice | None:
    query = select(Invoice).where(Invoice.id == invoice_id)
    if lock and is_postgres(session):
        query = query.with_for_update()
    return (await session.scalars(query)).one_or_none()


def invoices_query(
    *,
    user_id: uuid.UUID | None = None,
    status: InvoiceStatus | None = None,
    period: str | None = None,
    region: str | None = None,
    kind: DocumentKind | None = None,
) -> Select[Any]:
    query = select(Invoice)
    if user_id is not None:
        query = query.where(Invoice.user_id == user_id)
    if status is not None:
        query = query.where(Invoice.status == status)
    if period is not None:
        query = query.where(Invoice.period == period)
    if region is not None:
        query = query.where(Invoice.region == region)
    if kind is not None:
        query = query.where(Invoice.kind == kind)
    return query.order_by(Invoice.issued_at.desc(), Invoice.number.desc())


def payments_query(user_id: uuid.UUID) -> Select[Any]:
    return (
        select(InvoicePayment)
        .where(InvoicePayment.user_id == user_id)
        .order_by(InvoicePayment.created_at.desc(), InvoicePayment.id)
    )


async def open_dispute(session: AsyncSession, invoice_id: uuid.UUID) -> Dispute | None:
    return (
        await session.scalars(
            select(Dispute).where(
                Dispute.invoice_id == invoice_id, Dispute.status == DisputeStatus.open
            )
        )
    ).one_or_none()


async def get_dispute(session: AsyncSession, dispute_id: uuid.UUID) -> Dispute | None:
    query = select(Dispute).where(Dispute.id == dispute_id)
    if is_postgres(session):
        query = query.with_for_update()
    return (await session.scalars(query)).one_or_none()


async def due_unpaid(session: AsyncSession, today: Any, limit: int) -> list[Invoice]:
    """Issued invoices whose due date has passed, oldest first."""
    query = (
        select(Invoice)
        .where(Invoice.status == InvoiceStatus.issued, Invoice.due_date < today)
        .order_by(Invoice.due_date, Invoice.id)
        .limit(limit)
    )
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    return list(await session.scalars(query))


async def status_totals(
    session: AsyncSession, region: str | None, period: str | None
) -> list[tuple[str, str, int, int, int, int, int, int]]:
    """Per status and kind: count, total, settled, paid, credited and what is due."""
    query = select(
        Invoice.status,
        Invoice.kind,
        func.count(),
        func.coalesce(func.sum(Invoice.total_micros), 0),
        func.coalesce(func.sum(Invoice.settled_micros), 0),
        func.coalesce(func.sum(Invoice.paid_micros), 0),
        func.coalesce(func.sum(Invoice.corrected_micros), 0),
        func.coalesce(func.sum(Invoice.tax_micros), 0),
    ).group_by(Invoice.status, Invoice.kind)
    if region is not None:
        query = query.where(Invoice.region == region)
    if period is not None:
        query = query.where(Invoice.period == period)
    return [
        (str(s), str(k), int(n), int(t), int(st), int(p), int(c), int(tx))
        for s, k, n, t, st, p, c, tx in await session.execute(query)
    ]


async def dispute_counts(
    session: AsyncSession, region: str | None, period: str | None
) -> dict[str, int]:
    query = (
        select(Dispute.status, func.count())
        .join(Invoice, Invoice.id == Dispute.invoice_id)
        .group_by(Dispute.status)
    )
    if region is not None:
        query = query.where(Invoice.region == region)
    if period is not None:
        query = query.where(Invoice.period == period)
    return {str(s): int(n) for s, n in await session.execute(query)}
