"""Billing endpoints: own invoices, their PDF, payment and disputes; the month so far; and the
operator's generation, overdue list, analytics, export and dispute resolution."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from gridex.auth.deps import CurrentPrincipal, StaffPrincipal, idempotent
from gridex.billing import pdf, service
from gridex.billing.models import Dispute, Invoice, InvoiceLine, InvoiceStatus
from gridex.billing.rules import Line
from gridex.billing.schemas import (
    BillingAnalyticsOut,
    BillingEstimateLineOut,
    BillingEstimateOut,
    CurrentCycleOut,
    CycleOut,
    DisputeIn,
    DisputeOut,
    DisputeResolveIn,
    InvoiceOut,
    InvoiceSummaryOut,
    PaymentOut,
)
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gridex.core.idempotency import IdempotencyConflict, IdempotencyInProgress
from gridex.core.pagination import Page, PageDep, paginate
from gridex.core.responses import csv_download
from gridex.core.schemas import raises
from gridex.ledger.errors import InsufficientFunds
from gridex.regions.service import UnknownRegion

billing_router = APIRouter(prefix="/billing", tags=["billing"])

Period = Annotated[str, Path(pattern=r"^\d{4}-\d{2}$", examples=["2026-03"])]
PeriodQuery = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")]


@dataclass(slots=True)
class _InvoiceView:
    """An invoice with its lines and latest dispute, for ``InvoiceOut``."""

    invoice: Invoice
    lines: list[InvoiceLine]
    dispute: Dispute | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.invoice, name)


async def _invoice_out(session: SessionDep, invoice: Invoice) -> InvoiceOut:
    lines = await service.invoice_lines(session, invoice)
    dispute = await service.invoice_dispute(session, invoice)
    return InvoiceOut.model_validate(_InvoiceView(invoice, lines, dispute))


@billing_router.get("/invoices")
async def list_invoices(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    status: InvoiceStatus | None = None,
    period: PeriodQuery = None,
    user_id: uuid.UUID | None = None,
    region: str | None = None,
) -> Page[InvoiceSummaryOut]:
    """Own invoices and credit notes, newest first; staff see everyone's (``user_id``,
    ``region`` filters)."""
    query = service.visible_invoices_query(
        principal, status=status, period=period, user_id=user_id, region=region
    )
    rows, total = await paginate(session, query, page)
    return Page.build([InvoiceSummaryOut.model_validate(r) for r in rows], total, page)


@billing_router.get("/invoices/{invoice_id}", responses=raises(NotFound))
async def get_invoice(
    invoice_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> InvoiceOut:
    """The invoice with its lines, each tracing back to readings, trades or ledger entries."""
    return await _invoice_out(
        session, await service.get_invoice(session, principal.user, invoice_id)
    )


@billing_router.get(
    "/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **raises(NotFound)},
)
async def invoice_pdf(
    invoice_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> Response:
    """The invoice as a PDF document, rendered on request."""
    invoice = await service.get_invoice(session, principal.user, invoice_id)
    document = await service.pdf_document(session, rt, invoice)
    body = await asyncio.to_thread(pdf.render, document)
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{invoice.number}.pdf"'},
    )


@billing_router.post(
    "/invoices/{invoice_id}/pay",
    status_code=status.HTTP_201_CREATED,
    responses=raises(
        NotFound, Conflict, InsufficientFunds, IdempotencyConflict, IdempotencyInProgress
    ),
)
@idempotent
async def pay_invoice(
    invoice_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> PaymentOut:
    """Pay what is due from the wallet (``Idempotency-Key`` honoured)."""
    payment = await service.pay_invoice(session, rt, principal.user, invoice_id)
    return PaymentOut.model_validate(payment)


@billing_router.post(
    "/invoices/{invoice_id}/dispute",
    status_code=status.HTTP_201_CREATED,
    responses=raises(NotFound, Conflict, ValidationFailed),
)
async def dispute_invoice(
    invoice_id: uuid.UUID,
    body: DisputeIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> DisputeOut:
    """Dispute your invoice with a reason: it is not payable until staff resolve it (a credit
    note may follow); 409 when it is a credit note, void or already disputed."""
    dispute = await service.dispute_invoice(session, rt, principal.user, invoice_id, body.reason)
    return DisputeOut.model_validate(dispute)


@billing_router.get("/payments")
async def list_invoice_payments(
    principal: CurrentPrincipal, session: SessionDep, page: PageDep
) -> Page[PaymentOut]:
    """Own invoice payments (and credits paid into the wallet, negative), newest first."""
    rows, total = await paginate(session, service.payments_query(principal.user.id), page)
    return Page.build([PaymentOut.model_validate(r) for r in rows], total, page)


def _estimate_lines(lines: list[Line]) -> list[BillingEstimateLineOut]:
    return [
        BillingEstimateLineOut(
            kind=line.kind.value,
            description=line.description,
            band=line.band,
            quantity_kwh=line.quantity_wh,
            unit_price=line.unit_price_micros,
            amount=line.amount_micros,
        )
        for line in lines
    ]


@billing_router.get("/current-cycle", responses=raises(NotFound, UnknownRegion))
async def current_billing_cycle(
    principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep, region: str | None = None
) -> CurrentCycleOut:
    """The month so far in the region's time, line by line as the invoice will show it."""
    cycle = await service.current_cycle(session, rt, principal.user, region)
    return CurrentCycleOut(
        region=cycle.region,
        period=cycle.period,
        period_start=cycle.start,
        period_end=cycle.end,
        as_of=cycle.as_of,
        currency=rt.settings.currency,
        lines=_estimate_lines(cycle.lines),
        subtotal=cycle.totals.subtotal_micros,
        tax=cycle.totals.tax_micros,
        total=cycle.totals.total_micros,
        daily=[
            {"date": day, "consumed_kwh": c / 1000, "produced_kwh": p / 1000}
            for day, c, p in cycle.daily
        ],
    )


@billing_router.get("/estimate", responses=raises(NotFound, UnknownRegion))
async def billing_estimate(
    principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep, region: str | None = None
) -> BillingEstimateOut:
    """The month's bill estimated from usage to date."""
    cycle = await service.current_cycle(session, rt, principal.user, region)
    return BillingEstimateOut(
        region=cycle.region,
        period=cycle.period,
        as_of=cycle.as_of,
        currency=rt.settings.currency,
        to_date_total=cycle.totals.total_micros,
        lines=_estimate_lines(cycle.projected),
        subtotal=cycle.projected_totals.subtotal_micros,
        tax=cycle.projected_totals.tax_micros,
        total=cycle.projected_totals.total_micros,
    )


# --- operators ---------------------------------------------------------------------------------


@billing_router.post(
    "/cycles/{period}/generate",
    responses=raises(Forbidden, Conflict, ValidationFailed, UnknownRegion),
)
async def generate_billing_cycle(
    period: Period,
    staff: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: str | None = None,
) -> CycleOut:
    """Issue the month's invoices (idempotent: a changed month yields credit notes only)."""
    result = await service.generate_cycle(
        session, rt, period, actor_id=staff.user.id, region=region
    )
    return CycleOut.model_validate(result)


@billing_router.get("/overdue", responses=raises(Forbidden))
async def billing_overdue(
    _: StaffPrincipal, session: SessionDep, page: PageDep, region: str | None = None
) -> Page[InvoiceSummaryOut]:
    """Overdue invoices, oldest due first (``region`` filter)."""
    rows, total = await paginate(session, service.overdue_query(region), page)
    return Page.build([InvoiceSummaryOut.model_validate(r) for r in rows], total, page)


@billing_router.get("/analytics", responses=raises(Forbidden))
async def billing_analytics(
    _: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: str | None = None,
    period: PeriodQuery = None,
) -> BillingAnalyticsOut:
    """Billed, settled through the wallet, paid, outstanding and overdue amounts; disputes."""
    a = await service.analytics(session, region, period)
    return BillingAnalyticsOut(
        region=region,
        period=period,
        currency=rt.settings.currency,
        invoices=a.invoices,
        credit_notes=a.credit_notes,
        billed=a.billed_micros,
        settled_through_wallet=a.settled_micros,
        paid=a.paid_micros,
        outstanding=a.outstanding_micros,
        overdue=a.overdue_micros,
        tax=a.tax_micros,
        by_status=a.by_status,
        disputes=a.disputes,
    )


@billing_router.get("/export.csv", response_class=StreamingResponse, responses=raises(Forbidden))
async def export_invoices_csv(
    _: StaffPrincipal,
    rt: RuntimeDep,
    region: str | None = None,
    period: PeriodQuery = None,
    status: InvoiceStatus | None = None,
) -> StreamingResponse:
    """Every invoice and credit note as CSV (streamed; opens in a spreadsheet)."""
    return csv_download("invoices", service.export_csv(rt, region, period, status))


@billing_router.post(
    "/disputes/{dispute_id}/resolve",
    responses=raises(Forbidden, NotFound, Conflict, ValidationFailed),
)
async def resolve_dispute(
    dispute_id: uuid.UUID,
    body: DisputeResolveIn,
    staff: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> DisputeOut:
    """Close a dispute, with an optional credit note of ``credit_amount``."""
    dispute = await service.resolve_dispute(
        session, rt, staff.user, dispute_id, body.resolution, body.credit_amount
    )
    return DisputeOut.model_validate(dispute)
