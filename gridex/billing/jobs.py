"""Scheduled billing: the monthly cycle and the overdue check; the feed of issued invoices
that the notifications job reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.billing import service
from gridex.billing.models import DocumentKind, Invoice
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money
from gridex.notifications.facts import Source, unseen_since
from gridex.notifications.jobs import Feed
from gridex.notifications.service import Draft


async def generate_due(rt: Runtime) -> int:
    """Issue each region's previous month once it has ended in the region's time, and issue
    credit notes for what changed since (see :func:`service.generate_due`). Returns how many
    documents it issued."""
    async with rt.db.sessionmaker() as session:
        result = await service.generate_due(session, rt)
        await session.commit()
    return result.issued + result.corrections


async def mark_overdue(rt: Runtime) -> int:
    """Mark issued invoices past their due date ``overdue`` (see :func:`service.mark_overdue`)."""
    async with rt.db.sessionmaker() as session:
        count = await service.mark_overdue(session, rt)
        await session.commit()
    return count


# --- notifications of issued invoices (handed to the notifications job by the app) -------------


async def _issued(session: AsyncSession, since: datetime) -> Sequence[Invoice]:
    return await unseen_since(session, Invoice, Invoice.issued_at, ISSUED_SOURCE, since, 500)


async def _issued_drafts(session: AsyncSession, invoices: Sequence[Invoice]) -> list[Draft]:
    drafts = []
    for inv in invoices:
        what = "Credit note" if inv.kind is DocumentKind.credit_note else "Invoice"
        total = micros_to_money(inv.total_micros)
        due = micros_to_money(inv.amount_due_micros)
        drafts.append(
            Draft(
                inv.user_id,
                "invoice_issued",
                f"{what} {inv.number} for {inv.period}: {total} {inv.currency}",
                f"{what} {inv.number} for {inv.period} in {inv.region} is issued: total "
                f"{total} {inv.currency}, {due} due by {inv.due_date.isoformat()}.",
                {
                    "invoice_id": str(inv.id),
                    "number": inv.number,
                    "period": inv.period,
                    "kind": inv.kind.value,
                    "total": total,
                    "amount_due": due,
                    "due_date": inv.due_date.isoformat(),
                },
            )
        )
    return drafts


ISSUED_SOURCE = "invoices_issued"
INVOICES_ISSUED = Feed(
    Source(ISSUED_SOURCE, _issued, key=lambda i: i.id.hex, at=lambda i: i.issued_at),
    _issued_drafts,
)
