"""Billing: monthly invoices per user and region, their payment from the wallet, disputes and
credit notes, the overdue job's change, and the operator's views.

An invoice has every line of the month (grid energy at the tariff, local trades, fees and the
settlement's charges and credits), but the market already settled its lines of
``SETTLED_KINDS`` through the wallet epoch by epoch; what the invoice asks for is the rest
(``amount_due``: the grid energy, the tax and later corrections). A negative amount due (a net
exporter's feed-in credit) is paid into the wallet from ``grid`` when the invoice is issued.

Generation is idempotent per region and month: a user with an invoice gets none again; when the
month's figures changed since (a re-settlement, a late reading), the difference becomes a credit
note, a new document with correction lines that changes what is due on the invoice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.models import Role, User
from gridex.billing import pdf, repository, rules
from gridex.billing.models import (
    SETTLED_KINDS,
    BillingCycle,
    Dispute,
    DisputeStatus,
    DocumentKind,
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceStatus,
    LineKind,
)
from gridex.billing.rules import Line, PriceSpan
from gridex.core.clock import utc_iso
from gridex.core.csvexport import csv_row
from gridex.core.db import insert_or_ignore
from gridex.core.errors import Conflict, NotFound, ValidationFailed
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, round_half_even
from gridex.ledger import service as ledger
from gridex.ledger.models import EntryType, ReferenceType
from gridex.regions.models import Region
from gridex.regions.service import list_regions, require_region
from gridex.tariffs import service as tariffs

INVOICE_CREDIT = "invoice_credit"  # ledger entry type: a credit balance paid into the wallet
OVERDUE_BATCH = 500


def _period(period: str) -> str:
    try:
        rules.parse_period(period)
    except ValueError as exc:
        raise ValidationFailed(str(exc), details={"field": "period"}) from exc
    return period


@dataclass(slots=True)
class Month:
    """One region's month: its bounds in UTC and its priced cells."""

    region: str
    timezone: str
    period: str
    start: datetime
    end: datetime
    cells: list[rules.PricedCell]

    @property
    def days(self) -> list[date]:
        return sorted({cell.day for cell in self.cells})


async def _month(
    session: AsyncSession, rt: Runtime, region: Region, period: str, until: datetime | None = None
) -> Month:
    tz = ZoneInfo(region.timezone)
    start, end = rules.month_bounds(period, tz)
    stop = end if until is None else max(start, min(end, until))
    segments = await tariffs.price_segments(session, rt, region.name, start, end)
    spans = [
        PriceSpan(s.start, s.end, s.band, s.import_price_micros, s.feed_in_price_micros)
        for s in segments
    ]
    cells = rules.price_cells(spans, start, end, tz)
    if stop < end:
        cells = [c for c in cells if c.start < stop]
    return Month(region.name, region.timezone, period, start, stop, cells)


@dataclass(slots=True)
class Statement:
    """One user's lines of a month (or of the month so far) and the days' energy."""

    user_id: uuid.UUID
    lines: list[Line]
    daily: list[list[Any]]
    meters: list[dict[str, Any]]


async def _statements(
    session: AsyncSession, month: Month, owner: uuid.UUID | None = None
) -> list[Statement]:
    """Every user's lines of ``month`` (only ``owner``'s when given), gathered in bulk."""
    if not month.cells:
        return []
    bounds = [cell.start for cell in month.cells]
    cells = await repository.energy_cells(session, month.region, bounds, month.end, owner)
    await repository.add_local_cells(session, month.region, bounds, month.end, cells, owner)
    trades = await repository.settled_trades(session, month.region, month.start, month.end, owner)
    entries = await repository.settlement_entries(
        session, month.region, month.start, month.end, owner
    )
    meters = await repository.region_meters(session, month.region)
    users = set(cells) | {t.buyer_id for t in trades} | {t.seller_id for t in trades}
    users |= {e.user_id for e in entries}
    if owner is not None:
        users = {owner}
    out: list[Statement] = []
    for user in sorted(users):
        own_meters = meters.get(user, [])
        energy = cells.get(user, {})
        lines = rules.energy_lines(month.cells, energy, [m.id for m in own_meters])
        lines += rules.trade_lines(user, [t for t in trades if user in (t.buyer_id, t.seller_id)])
        lines += rules.entry_lines([e for e in entries if e.user_id == user])
        out.append(
            Statement(
                user,
                lines,
                rules.daily_energy(month.cells, energy, month.days),
                [{"id": str(m.id), "serial": m.serial, "kind": m.kind.value} for m in own_meters],
            )
        )
    return out


# --- generation -------------------------------------------------------------------------------


@dataclass(slots=True)
class CycleResult:
    period: str
    regions: list[str]
    issued: int = 0
    corrections: int = 0
    unchanged: int = 0


def _tax_ppm(rt: Runtime) -> int:
    return rules.tax_rate_ppm(rt.settings.tax_rate)


async def generate_cycle(
    session: AsyncSession,
    rt: Runtime,
    period: str,
    *,
    actor_id: uuid.UUID | None,
    region: str | None = None,
) -> CycleResult:
    """Issue the invoices of ``period`` (every region, or one), once per user and region.

    Only a month that has ended in the region's time can be billed (409 otherwise). Running it
    again issues nothing new unless the month's figures changed: then each changed user gets a
    credit note with the difference.
    """
    _period(period)
    now = rt.clock.now()
    regions = [await require_region(session, region)] if region else await list_regions(session)
    result = CycleResult(period, [r.name for r in regions])
    for r in regions:
        month = await _month(session, rt, r, period)
        if month.end > now:
            if region is not None:
                raise Conflict(
                    f"{period} has not ended yet in {r.name} ({r.timezone})",
                    details={"period": period, "ends_at": utc_iso(month.end)},
                )
            continue
        await _generate_region(session, rt, month, now, actor_id, result)
    record(
        session,
        at=now,
        action="billing.cycle_generated",
        actor_id=actor_id,
        actor_type="user" if actor_id else "system",
        subject_type="billing_cycle",
        subject_id=period,
        details={
            "regions": result.regions,
            "issued": result.issued,
            "corrections": result.corrections,
        },
    )
    return result


# How often the monthly job re-reads a generated month for corrections (credit notes).
RECHECK = timedelta(days=1)


async def generate_due(session: AsyncSession, rt: Runtime) -> CycleResult:
    """The monthly job: for each region, its previous month in its own time, generated once the
    month has ended there, and re-read once a day after that so that corrections become credit
    notes. Cheap when there is nothing to do (one row read per region)."""
    now = rt.clock.now()
    total = CycleResult("", [])
    for region in await list_regions(session):
        tz = ZoneInfo(region.timezone)
        first = now.astimezone(tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        period = rules.period_of(first - timedelta(days=1), tz)
        cycle = await session.get(BillingCycle, (region.name, period))
        if cycle is not None and cycle.generated_at > now - RECHECK:
            continue
        result = await generate_cycle(session, rt, period, actor_id=None, region=region.name)
        total.regions.append(f"{region.name}:{period}")
        total.issued += result.issued
        total.corrections += result.corrections
        total.unchanged += result.unchanged
    return total


async def _lock_cycle(
    session: AsyncSession, month: Month, now: datetime, actor_id: uuid.UUID | None
) -> BillingCycle:
    values = {
        "region": month.region,
        "period": month.period,
        "period_start": month.start,
        "period_end": month.end,
        "invoices": 0,
        "generated_at": now,
        "generated_by_id": actor_id,
    }
    await session.execute(
        insert_or_ignore(session, BillingCycle.__table__, conflict=["region", "period"]), values
    )
    cycle = await repository.lock_cycle(session, month.region, month.period)
    assert cycle is not None
    await session.refresh(cycle)
    return cycle


async def _generate_region(
    session: AsyncSession,
    rt: Runtime,
    month: Month,
    now: datetime,
    actor_id: uuid.UUID | None,
    result: CycleResult,
) -> None:
    cycle = await _lock_cycle(session, month, now, actor_id)
    existing = await repository.documents_of_period(session, month.region, month.period)
    old_lines = await repository.lines_of(
        session, [doc.id for docs in existing.values() for doc in docs]
    )
    rate = _tax_ppm(rt)
    for statement in await _statements(session, month):
        docs = existing.get(statement.user_id)
        if not docs:
            if not statement.lines:
                continue
            cycle.invoices += 1
            await _issue(
                session, rt, month, statement, statement.lines, cycle.invoices, 0, None, now, rate
            )
            result.issued += 1
            continue
        before = [_line_of(line) for doc in docs for line in old_lines.get(doc.id, [])]
        delta = rules.difference(before, statement.lines)
        if not delta:
            result.unchanged += 1
            continue
        cycle.invoices += 1
        note = await _issue(
            session, rt, month, statement, delta, cycle.invoices, len(docs), docs[0], now, rate
        )
        await _apply_note(session, rt, docs[0], note, now)
        result.corrections += 1
    cycle.generated_at = now
    await session.flush()


def _line_of(row: InvoiceLine) -> Line:
    return Line(
        row.kind,
        row.description,
        row.amount_micros,
        row.band,
        row.quantity_wh,
        row.unit_price_micros,
        dict(row.trace),
    )


def _number(kind: DocumentKind, period: str, region: str, n: int) -> str:
    prefix = "INV" if kind is DocumentKind.invoice else "CN"
    return f"{prefix}-{period.replace('-', '')}-{region.upper()}-{n:05d}"


async def _issue(
    session: AsyncSession,
    rt: Runtime,
    month: Month,
    statement: Statement,
    lines: Sequence[Line],
    n: int,
    sequence: int,
    corrects: Invoice | None,
    now: datetime,
    rate_ppm: int,
) -> Invoice:
    kind = DocumentKind.invoice if corrects is None else DocumentKind.credit_note
    sums = rules.totals(lines, rate_ppm)
    today = now.astimezone(ZoneInfo(month.timezone)).date()
    invoice = Invoice(
        id=uuid.uuid4(),
        number=_number(kind, month.period, month.region, n),
        kind=kind,
        sequence=sequence,
        corrects_id=None if corrects is None else corrects.id,
        user_id=statement.user_id,
        region=month.region,
        period=month.period,
        period_start=month.start,
        period_end=month.end,
        timezone=month.timezone,
        status=InvoiceStatus.issued,
        issued_at=now,
        due_date=today + timedelta(days=rt.settings.invoice_due_days),
        currency=rt.settings.currency,
        tax_rate=micros_to_money(rate_ppm),
        subtotal_micros=sums.subtotal_micros,
        tax_micros=sums.tax_micros,
        total_micros=sums.total_micros,
        settled_micros=sums.settled_micros,
        paid_micros=0,
        corrected_micros=0,
        meters=statement.meters,
        daily=statement.daily,
    )
    session.add(invoice)
    session.add_all(
        InvoiceLine(
            invoice_id=invoice.id,
            position=i,
            kind=line.kind,
            description=line.description[:200],
            band=line.band,
            quantity_wh=line.quantity_wh,
            unit_price_micros=line.unit_price_micros,
            amount_micros=line.amount_micros,
            trace=line.trace,
        )
        for i, line in enumerate(lines)
    )
    await session.flush()
    if kind is DocumentKind.invoice:
        await _settle_balance(session, rt, invoice, now)
    _event(session, rt, invoice, "invoice_issued", now)
    return invoice


def _event(session: AsyncSession, rt: Runtime, invoice: Invoice, type: str, now: datetime) -> None:
    emit(
        session,
        rt.pubsub,
        (f"user:{invoice.user_id}", "billing"),
        type,
        {
            "invoice_id": str(invoice.id),
            "number": invoice.number,
            "user_id": str(invoice.user_id),
            "region": invoice.region,
            "period": invoice.period,
            "status": invoice.status.value,
            "total": micros_to_money(invoice.total_micros),
            "amount_due": micros_to_money(invoice.amount_due_micros),
            "due_date": invoice.due_date.isoformat(),
        },
        now,
    )


async def _apply_note(
    session: AsyncSession, rt: Runtime, invoice: Invoice, note: Invoice, now: datetime
) -> None:
    """A credit note changes what is due on the invoice it corrects by its own billed part; the
    note itself is settled by that (status ``paid``)."""
    invoice.corrected_micros += note.total_micros - note.settled_micros
    note.status = InvoiceStatus.paid
    note.paid_at = now
    if invoice.status is not InvoiceStatus.disputed:
        await _settle_balance(session, rt, invoice, now)


async def _settle_balance(
    session: AsyncSession, rt: Runtime, invoice: Invoice, now: datetime
) -> None:
    """Pay a credit balance into the wallet and set the status from what is due."""
    due = invoice.amount_due_micros
    if due < 0:
        posted = await ledger.credit(
            session,
            at=now,
            user_id=invoice.user_id,
            amount_micros=-due,
            source=ledger.GRID,
            type=INVOICE_CREDIT,
            description=f"Credit of invoice {invoice.number}",
            reference=ledger.Reference(ReferenceType.invoice, invoice.id),
        )
        session.add(
            InvoicePayment(
                invoice_id=invoice.id,
                user_id=invoice.user_id,
                amount_micros=due,
                method="credit_payout",
                entry_id=posted.id,
                created_at=now,
            )
        )
        invoice.paid_micros += due
    if invoice.status is InvoiceStatus.void:
        return
    if invoice.amount_due_micros == 0:
        if invoice.status is not InvoiceStatus.paid:
            invoice.status = InvoiceStatus.paid
            invoice.paid_at = now
    elif invoice.status is InvoiceStatus.paid or invoice.status is InvoiceStatus.disputed:
        overdue = invoice.due_date < now.date()
        invoice.status = InvoiceStatus.overdue if overdue else InvoiceStatus.issued
        invoice.paid_at = None
        if overdue and invoice.overdue_at is None:
            invoice.overdue_at = now
    await session.flush()


# --- reading and paying ------------------------------------------------------------------------


def _visible(invoice: Invoice | None, user: User) -> Invoice:
    """The invoice, if ``user`` may see it: its owner, or staff. Anyone else: 404."""
    if invoice is None or (
        invoice.user_id != user.id and user.role not in (Role.admin, Role.operator)
    ):
        raise NotFound("There is no such invoice", details={"resource": "invoice"})
    return invoice


async def get_invoice(session: AsyncSession, user: User, invoice_id: uuid.UUID) -> Invoice:
    return _visible(await repository.get_invoice(session, invoice_id), user)


async def invoice_lines(session: AsyncSession, invoice: Invoice) -> list[InvoiceLine]:
    return (await repository.lines_of(session, [invoice.id])).get(invoice.id, [])


async def invoice_dispute(session: AsyncSession, invoice: Invoice) -> Dispute | None:
    return (
        await session.scalars(
            select(Dispute)
            .where(Dispute.invoice_id == invoice.id)
            .order_by(Dispute.created_at.desc())
            .limit(1)
        )
    ).one_or_none()


async def pay_invoice(
    session: AsyncSession, rt: Runtime, user: User, invoice_id: uuid.UUID
) -> InvoicePayment:
    """Pay what is due on the caller's own invoice from the wallet's ``available`` (to
    ``grid``): ``INSUFFICIENT_FUNDS`` when it does not cover it, ``CONFLICT`` when nothing is
    due or the invoice is disputed."""
    invoice = await repository.get_invoice(session, invoice_id, lock=True)
    if invoice is None or invoice.user_id != user.id:
        raise NotFound("There is no such invoice", details={"resource": "invoice"})
    due = invoice.amount_due_micros
    if invoice.status is InvoiceStatus.disputed:
        raise Conflict("The invoice is disputed; it can be paid once the dispute is resolved")
    if invoice.kind is DocumentKind.credit_note or due <= 0:
        raise Conflict("Nothing is due on this invoice", details={"status": invoice.status.value})
    now = rt.clock.now()
    posted = await ledger.debit(
        session,
        at=now,
        user_id=user.id,
        amount_micros=due,
        destination=ledger.GRID,
        type=EntryType.invoice_payment,
        description=f"Payment of invoice {invoice.number}",
        reference=ledger.Reference(ReferenceType.invoice, invoice.id),
    )
    payment = InvoicePayment(
        invoice_id=invoice.id,
        user_id=user.id,
        amount_micros=due,
        method="wallet",
        entry_id=posted.id,
        created_at=now,
    )
    session.add(payment)
    invoice.paid_micros += due
    await _settle_balance(session, rt, invoice, now)
    _event(session, rt, invoice, "invoice_paid", now)
    return payment


# --- disputes --------------------------------------------------------------------------------


async def dispute_invoice(
    session: AsyncSession, rt: Runtime, user: User, invoice_id: uuid.UUID, reason: str
) -> Dispute:
    invoice = await repository.get_invoice(session, invoice_id, lock=True)
    if invoice is None or invoice.user_id != user.id:
        raise NotFound("There is no such invoice", details={"resource": "invoice"})
    if invoice.kind is not DocumentKind.invoice or invoice.status in (
        InvoiceStatus.disputed,
        InvoiceStatus.void,
    ):
        raise Conflict(
            "This invoice cannot be disputed now", details={"status": invoice.status.value}
        )
    now = rt.clock.now()
    dispute = Dispute(
        invoice_id=invoice.id,
        user_id=user.id,
        reason=reason,
        status=DisputeStatus.open,
        previous_status=invoice.status.value,
        created_at=now,
    )
    session.add(dispute)
    invoice.status = InvoiceStatus.disputed
    await session.flush()
    _event(session, rt, invoice, "invoice_disputed", now)
    return dispute


async def resolve_dispute(
    session: AsyncSession,
    rt: Runtime,
    staff: User,
    dispute_id: uuid.UUID,
    resolution: str,
    credit_micros: int | None,
) -> Dispute:
    """Close an open dispute; a ``credit_micros`` > 0 issues a credit note for that gross amount
    (no tax of its own), at most what the invoice still bills."""
    dispute = await repository.get_dispute(session, dispute_id)
    if dispute is None:
        raise NotFound("There is no such dispute", details={"resource": "dispute"})
    if dispute.status is not DisputeStatus.open:
        raise Conflict("The dispute is already resolved")
    invoice = await repository.get_invoice(session, dispute.invoice_id, lock=True)
    assert invoice is not None
    now = rt.clock.now()
    billed = invoice.total_micros - invoice.settled_micros + invoice.corrected_micros
    if credit_micros:
        if credit_micros < 0 or credit_micros > max(0, billed):
            raise ValidationFailed(
                "The credit must be positive and at most what the invoice bills",
                details={"field": "credit_amount", "max": micros_to_money(max(0, billed))},
            )
        cycle = await repository.lock_cycle(session, invoice.region, invoice.period)
        assert cycle is not None
        cycle.invoices += 1
        docs = (await repository.documents_of_period(session, invoice.region, invoice.period))[
            invoice.user_id
        ]
        month = Month(
            invoice.region,
            invoice.timezone,
            invoice.period,
            invoice.period_start,
            invoice.period_end,
            [],
        )
        line = Line(
            LineKind.credit_note,
            f"Credit for dispute of {invoice.number}",
            -credit_micros,
            trace={"dispute": str(dispute.id), "corrects": LineKind.credit_note.value},
        )
        statement = Statement(invoice.user_id, [line], [], invoice.meters)
        note = await _issue(
            session, rt, month, statement, [line], cycle.invoices, len(docs), invoice, now, 0
        )
        dispute.credit_note_id = note.id
        invoice.corrected_micros += note.total_micros
        note.status = InvoiceStatus.paid
        note.paid_at = now
        if credit_micros == billed and invoice.paid_micros == 0:
            invoice.status = InvoiceStatus.void
            invoice.voided_at = now
    if invoice.status is InvoiceStatus.disputed:
        invoice.status = InvoiceStatus(dispute.previous_status)
        if invoice.status is InvoiceStatus.overdue and invoice.overdue_at is None:
            invoice.overdue_at = now
        await _settle_balance(session, rt, invoice, now)
    dispute.status = DisputeStatus.resolved
    dispute.resolution = resolution
    dispute.resolved_at = now
    dispute.resolved_by_id = staff.id
    record(
        session,
        at=now,
        action="billing.dispute_resolved",
        actor_id=staff.id,
        subject_type="invoice",
        subject_id=invoice.id,
        details={
            "dispute_id": str(dispute.id),
            "credit": micros_to_money(credit_micros or 0),
            "resolution": resolution[:200],
        },
    )
    await session.flush()
    _event(session, rt, invoice, "invoice_dispute_resolved", now)
    return dispute


# --- overdue ---------------------------------------------------------------------------------


async def mark_overdue(session: AsyncSession, rt: Runtime) -> int:
    """Issued invoices past their due date with money still due become ``overdue`` (a committed
    status and ``overdue_at``, from which alerts derive ``invoice_overdue``); each also emits an
    ``invoice_overdue`` event for live listeners."""
    now = rt.clock.now()
    count = 0
    for invoice in await repository.due_unpaid(session, now.date(), OVERDUE_BATCH):
        if invoice.amount_due_micros <= 0:
            continue
        invoice.status = InvoiceStatus.overdue
        invoice.overdue_at = now
        _event(session, rt, invoice, "invoice_overdue", now)
        count += 1
    await session.flush()
    return count


# --- the current month -------------------------------------------------------------------------


@dataclass(slots=True)
class CycleSoFar:
    region: str
    period: str
    start: datetime
    end: datetime
    as_of: datetime
    lines: list[Line]
    totals: rules.Totals
    projected: list[Line]
    projected_totals: rules.Totals
    daily: list[list[Any]]


async def _user_region(session: AsyncSession, user: User, region: str | None) -> Region:
    if region is not None:
        return await require_region(session, region)
    names = sorted(
        {
            m.region
            for meters in (await repository.region_meters_of(session, user.id)).values()
            for m in meters
        }
    )
    name = names[0] if names else user.region
    if name is None:
        raise NotFound("You have no meter in any region", details={"resource": "region"})
    return await require_region(session, name)


async def current_cycle(
    session: AsyncSession, rt: Runtime, user: User, region: str | None = None
) -> CycleSoFar:
    """The user's month so far in the region's time, and the month's bill projected from it:
    each line scaled by the month's length over the time elapsed (rounded half-even)."""
    r = await _user_region(session, user, region)
    now = rt.clock.now()
    period = rules.period_of(now, ZoneInfo(r.timezone))
    month = await _month(session, rt, r, period, until=now)
    statements = await _statements(session, month, user.id)
    statement = statements[0] if statements else Statement(user.id, [], [], [])
    full_start, full_end = rules.month_bounds(period, ZoneInfo(r.timezone))
    elapsed = int((month.end - full_start).total_seconds())
    length = int((full_end - full_start).total_seconds())
    projected = [
        Line(
            line.kind,
            line.description,
            round_half_even(line.amount_micros * length, elapsed) if elapsed else 0,
            line.band,
            round_half_even(line.quantity_wh * length, elapsed)
            if line.quantity_wh is not None and elapsed
            else line.quantity_wh,
            line.unit_price_micros,
        )
        for line in statement.lines
    ]
    rate = _tax_ppm(rt)
    return CycleSoFar(
        r.name,
        period,
        full_start,
        full_end,
        month.end,
        statement.lines,
        rules.totals(statement.lines, rate),
        projected,
        rules.totals(projected, rate),
        statement.daily,
    )


# --- operator views ----------------------------------------------------------------------------


@dataclass(slots=True)
class Analytics:
    invoices: int
    credit_notes: int
    billed_micros: int
    settled_micros: int
    paid_micros: int
    outstanding_micros: int
    overdue_micros: int
    tax_micros: int
    by_status: dict[str, int]
    disputes: dict[str, int]


async def analytics(session: AsyncSession, region: str | None, period: str | None) -> Analytics:
    """Billed (invoice totals and corrections), paid, outstanding and disputes."""
    if period is not None:
        _period(period)
    rows = await repository.status_totals(session, region, period)
    out = Analytics(0, 0, 0, 0, 0, 0, 0, 0, {}, {})
    for status, kind, n, total, settled, paid, corrected, tax in rows:
        if kind == DocumentKind.credit_note:
            out.credit_notes += n
            out.billed_micros += total
            out.settled_micros += settled
            out.tax_micros += tax
            continue
        out.invoices += n
        out.by_status[status] = out.by_status.get(status, 0) + n
        out.billed_micros += total
        out.settled_micros += settled
        out.paid_micros += paid
        out.tax_micros += tax
        due = total - settled - paid + corrected
        if status != InvoiceStatus.void:
            out.outstanding_micros += max(0, due)
        if status == InvoiceStatus.overdue:
            out.overdue_micros += max(0, due)
    disputes = await repository.dispute_counts(session, region, period)
    out.disputes = {s.value: disputes.get(s.value, 0) for s in DisputeStatus}
    return out


EXPORT_HEADER = (
    "number",
    "kind",
    "user_id",
    "region",
    "period",
    "status",
    "issued_at",
    "due_date",
    "currency",
    "subtotal",
    "tax",
    "total",
    "settled_through_wallet",
    "paid",
    "corrections",
    "amount_due",
    "overdue_at",
)


async def export_csv(
    rt: Runtime, region: str | None, period: str | None, status: InvoiceStatus | None
) -> AsyncIterator[str]:
    """The invoices as CSV text, line by line, read in batches from a session of its own (the
    response streams after the request's unit of work has ended)."""
    query = repository.invoices_query(region=region, period=period, status=status)
    yield csv_row(EXPORT_HEADER)
    async with rt.db.sessionmaker() as session:
        result = await session.stream_scalars(query.execution_options(yield_per=500))
        async for inv in result:
            yield csv_row(_export_row(inv))


def _export_row(inv: Invoice) -> list[Any]:
    return [
        inv.number,
        inv.kind.value,
        str(inv.user_id),
        inv.region,
        inv.period,
        inv.status.value,
        inv.issued_at,
        inv.due_date.isoformat(),
        inv.currency,
        micros_to_money(inv.subtotal_micros),
        micros_to_money(inv.tax_micros),
        micros_to_money(inv.total_micros),
        micros_to_money(inv.settled_micros),
        micros_to_money(inv.paid_micros),
        micros_to_money(inv.corrected_micros),
        micros_to_money(inv.amount_due_micros),
        inv.overdue_at,
    ]


def check_period(period: str | None) -> str | None:
    return None if period is None else _period(period)


def today_utc(rt: Runtime) -> date:
    return rt.clock.now().astimezone(UTC).date()


# --- queries and the document ------------------------------------------------------------------


def invoices_query(
    *,
    user_id: uuid.UUID | None,
    status: InvoiceStatus | None,
    period: str | None,
    region: str | None,
) -> Any:
    return repository.invoices_query(user_id=user_id, status=status, period=period, region=region)


def payments_query(user_id: uuid.UUID) -> Any:
    return repository.payments_query(user_id)


def overdue_query(region: str | None) -> Any:
    query = repository.invoices_query(status=InvoiceStatus.overdue, region=region)
    return query.order_by(None).order_by(Invoice.due_date, Invoice.number)


PLATFORM_NAME = "Gridex"


async def pdf_document(session: AsyncSession, rt: Runtime, invoice: Invoice) -> pdf.Document:
    """What the PDF shows of ``invoice``: the customer, meters, lines, totals and daily energy."""
    customer = await session.get(User, invoice.user_id)
    assert customer is not None
    lines = await invoice_lines(session, invoice)
    corrects = None
    if invoice.corrects_id is not None:
        original = await repository.get_invoice(session, invoice.corrects_id)
        corrects = original.number if original is not None else None
    name = " ".join(p for p in (customer.first_name, customer.last_name) if p) or customer.username
    details = [f"Customer {customer.username}"]
    if customer.email:
        details.append(customer.email)
    if customer.department:
        details.append(customer.department)
    details.append(f"Customer id {customer.id}")
    year, month = rules.parse_period(invoice.period)
    label = date(year, month, 1).strftime("%B %Y")
    return pdf.Document(
        platform=PLATFORM_NAME,
        title="Invoice" if invoice.kind is DocumentKind.invoice else "Credit note",
        number=invoice.number,
        corrects=corrects,
        status=invoice.status.value,
        issued_at=invoice.issued_at.astimezone(ZoneInfo(invoice.timezone)),
        due_date=invoice.due_date,
        period=invoice.period,
        period_label=label,
        region=invoice.region,
        timezone=invoice.timezone,
        currency=invoice.currency,
        customer_name=name,
        customer_lines=details,
        meters=[f"{m['serial']} ({m['kind']})" for m in invoice.meters],
        lines=[
            pdf.DocLine(
                line.description,
                line.quantity_wh,
                line.unit_price_micros,
                line.amount_micros,
                rules.corrected_kind(_line_of(line)) in SETTLED_KINDS,
            )
            for line in lines
        ],
        subtotal_micros=invoice.subtotal_micros,
        tax_rate=invoice.tax_rate,
        tax_micros=invoice.tax_micros,
        total_micros=invoice.total_micros,
        settled_micros=invoice.settled_micros,
        paid_micros=invoice.paid_micros,
        corrected_micros=invoice.corrected_micros,
        amount_due_micros=invoice.amount_due_micros,
        daily=[(str(d), int(a), int(b)) for d, a, b in invoice.daily],
    )


# --- what other domains read: overdue and unpaid invoices ---------------------------------------


async def overdue_invoices(session: AsyncSession, now: datetime) -> list[Invoice]:
    """Every invoice that is ``overdue`` now (paid, disputed or voided ones are not)."""
    rows = await session.scalars(
        select(Invoice)
        .where(Invoice.status == InvoiceStatus.overdue)
        .order_by(Invoice.due_date, Invoice.number)
    )
    return list(rows)


async def unpaid_by_user(
    session: AsyncSession, user_ids: Sequence[uuid.UUID] | None, now: datetime
) -> dict[uuid.UUID, int]:
    """Per user (of ``user_ids``, or every user when None), the micros still due on their
    issued and overdue invoices; users who owe nothing are left out."""
    query = select(Invoice).where(Invoice.status.in_([InvoiceStatus.issued, InvoiceStatus.overdue]))
    if user_ids is not None:
        query = query.where(Invoice.user_id.in_(user_ids))
    rows = await session.scalars(query)
    out: dict[uuid.UUID, int] = {}
    for invoice in rows:
        due = invoice.amount_due_micros
        if due > 0:
            out[invoice.user_id] = out.get(invoice.user_id, 0) + due
    return out
