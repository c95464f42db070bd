"""Top-ups, the provider webhook, refunds and withdrawals."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from gridex.auth.deps import CurrentPrincipal, StaffPrincipal, idempotent
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.pagination import Page, PageDep, paginate
from gridex.payments import service
from gridex.payments.models import WithdrawalStatus
from gridex.payments.schemas import (
    DecisionIn,
    PaymentIntentCreatedOut,
    PaymentIntentOut,
    RefundIn,
    RefundOut,
    TopupIn,
    WebhookOut,
    WithdrawalIn,
    WithdrawalOut,
)

wallet_payments_router = APIRouter(prefix="/wallet", tags=["wallet"])
payments_router = APIRouter(prefix="/payments", tags=["payments"])
payments_admin_router = APIRouter(prefix="/admin", tags=["admin"])


@wallet_payments_router.post("/topups", status_code=status.HTTP_201_CREATED)
@idempotent
async def create_topup(
    body: TopupIn, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> PaymentIntentCreatedOut:
    """Open a payment intent; only the provider's signed webhook credits the wallet."""
    intent = await service.create_topup(session, rt, principal, body.amount)
    return PaymentIntentCreatedOut.model_validate(intent)


@wallet_payments_router.get("/topups")
async def list_topups(
    principal: CurrentPrincipal, session: SessionDep, page: PageDep
) -> Page[PaymentIntentOut]:
    rows, total = await paginate(session, service.intents_query(principal.user.id), page)
    return Page.build([PaymentIntentOut.model_validate(r) for r in rows], total, page)


@wallet_payments_router.post("/withdrawals", status_code=status.HTTP_201_CREATED)
@idempotent
async def request_withdrawal(
    body: WithdrawalIn, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> WithdrawalOut:
    """Hold the amount until an operator approves (pays out) or rejects (gives back)."""
    withdrawal = await service.request_withdrawal(
        session, rt, principal, body.amount, body.destination
    )
    return WithdrawalOut.model_validate(withdrawal)


@wallet_payments_router.get("/withdrawals")
async def list_withdrawals(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    status: WithdrawalStatus | None = None,
) -> Page[WithdrawalOut]:
    rows, total = await paginate(
        session, service.withdrawals_query(principal.user.id, status), page
    )
    return Page.build([WithdrawalOut.model_validate(r) for r in rows], total, page)


@payments_router.post("/webhook")
async def webhook(request: Request, session: SessionDep, rt: RuntimeDep) -> WebhookOut:
    """The provider's callback: the built-in provider's events signed with
    `Gridex-Signature: t=<unix>,v1=<hex>`, or Stripe's own events with `Stripe-Signature`; a
    wrong or stale (> 5 min) signature is 400 INVALID_SIGNATURE and changes nothing."""
    body = await request.body()
    return await service.handle_webhook(session, rt, body, request.headers)


@payments_admin_router.post("/payments/{payment_id}/complete")
async def complete_payment(
    payment_id: uuid.UUID, staff: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> WebhookOut:
    """Development and test only (403 in production): complete an intent by signing its
    provider webhook and passing it through the webhook's own code path."""
    return await service.complete_intent(session, rt, payment_id, actor=staff)


@payments_admin_router.post("/payments/{payment_id}/refund", status_code=status.HTTP_201_CREATED)
@idempotent
async def refund_payment(
    payment_id: uuid.UUID,
    body: RefundIn,
    staff: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> RefundOut:
    """Refund a succeeded top-up, whole (no `amount`) or in part, through the provider."""
    refund = await service.refund(session, rt, staff, payment_id, body.amount, body.reason)
    return RefundOut.model_validate(refund)


@payments_admin_router.get("/withdrawals")
async def admin_withdrawals(
    _: StaffPrincipal,
    session: SessionDep,
    page: PageDep,
    status: WithdrawalStatus | None = None,
    user_id: uuid.UUID | None = None,
) -> Page[WithdrawalOut]:
    rows, total = await paginate(session, service.withdrawals_query(user_id, status), page)
    return Page.build([WithdrawalOut.model_validate(r) for r in rows], total, page)


@payments_admin_router.post("/withdrawals/{withdrawal_id}/approve")
@idempotent
async def approve_withdrawal(
    withdrawal_id: uuid.UUID, staff: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> WithdrawalOut:
    withdrawal = await service.approve_withdrawal(session, rt, staff, withdrawal_id)
    return WithdrawalOut.model_validate(withdrawal)


@payments_admin_router.post("/withdrawals/{withdrawal_id}/reject")
@idempotent
async def reject_withdrawal(
    withdrawal_id: uuid.UUID,
    staff: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    body: DecisionIn | None = None,
) -> WithdrawalOut:
    withdrawal = await service.reject_withdrawal(
        session, rt, staff, withdrawal_id, body.reason if body else None
    )
    return WithdrawalOut.model_validate(withdrawal)
