"""Top-ups, the provider webhook, refunds and withdrawals."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from gridex.auth.deps import CurrentPrincipal, StaffPrincipal, idempotent
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gridex.core.idempotency import IdempotencyConflict, IdempotencyInProgress
from gridex.core.pagination import Page, PageDep, paginate
from gridex.core.schemas import raises
from gridex.ledger.errors import InsufficientFunds
from gridex.payments import service
from gridex.payments.models import WithdrawalStatus
from gridex.payments.providers import SIGNATURE_HEADER
from gridex.payments.schemas import (
    DecisionIn,
    PaymentIntentCreatedOut,
    PaymentIntentOut,
    RefundIn,
    RefundOut,
    TopupIn,
    WebhookEvent,
    WebhookOut,
    WithdrawalIn,
    WithdrawalOut,
)
from gridex.payments.service import WebhookSignatureInvalid
from gridex.payments.stripe_provider import SIGNATURE_HEADER as STRIPE_SIGNATURE_HEADER

wallet_payments_router = APIRouter(prefix="/wallet", tags=["wallet"])
payments_router = APIRouter(prefix="/payments", tags=["payments"])
payments_admin_router = APIRouter(prefix="/admin", tags=["admin"])


IDEMPOTENT = (IdempotencyConflict, IdempotencyInProgress)


@wallet_payments_router.post(
    "/topups", status_code=status.HTTP_201_CREATED, responses=raises(*IDEMPOTENT)
)
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
    """Your top-ups (payment intents) with their status, newest first."""
    rows, total = await paginate(session, service.intents_query(principal.user.id), page)
    return Page.build([PaymentIntentOut.model_validate(r) for r in rows], total, page)


@wallet_payments_router.post(
    "/withdrawals",
    status_code=status.HTTP_201_CREATED,
    responses=raises(InsufficientFunds, *IDEMPOTENT),
)
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
    """Your withdrawals, optionally of one status."""
    rows, total = await paginate(
        session, service.withdrawals_query(principal.user.id, status), page
    )
    return Page.build([WithdrawalOut.model_validate(r) for r in rows], total, page)


@payments_router.post(
    "/webhook",
    responses=raises(WebhookSignatureInvalid, NotFound, ValidationFailed),
    openapi_extra={
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": False,
                "description": "The built-in provider's events: `t=<unix seconds>,v1=<hex>`: "
                "`v1` is HMAC-SHA256 with the webhook secret over `<t>.<raw body>`; `t` must be "
                "within the tolerance (300 s by default). Several `v1` values may be given "
                "during a secret rotation. One of this and `Stripe-Signature` is required.",
                "schema": {"type": "string", "example": "t=1767225600,v1=5257a869e7..."},
            },
            {
                "name": STRIPE_SIGNATURE_HEADER,
                "in": "header",
                "required": False,
                "description": "Stripe's events (`GRIDEX_PAYMENT_PROVIDER=stripe`), signed by "
                "Stripe with the endpoint's signing secret (`t=...,v1=...`, Stripe's scheme).",
                "schema": {"type": "string", "example": "t=1767225600,v1=5257a869e7..."},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WebhookEvent.model_json_schema()}},
        },
    },
)
async def webhook(request: Request, session: SessionDep, rt: RuntimeDep) -> WebhookOut:
    """The provider's callback: the built-in provider's events signed with
    `Gridex-Signature: t=<unix>,v1=<hex>`, or Stripe's own events with `Stripe-Signature`; a
    wrong or stale (> 5 min) signature is 400 INVALID_SIGNATURE and changes nothing."""
    body = await request.body()
    return await service.handle_webhook(session, rt, body, request.headers)


@payments_admin_router.post(
    "/payments/{payment_id}/complete", responses=raises(Forbidden, NotFound)
)
async def complete_payment(
    payment_id: uuid.UUID, staff: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> WebhookOut:
    """Development and test only (403 in production): complete an intent by signing its
    provider webhook and passing it through the webhook's own code path."""
    return await service.complete_intent(session, rt, payment_id, actor=staff)


@payments_admin_router.post(
    "/payments/{payment_id}/refund",
    status_code=status.HTTP_201_CREATED,
    responses=raises(Forbidden, NotFound, Conflict, *IDEMPOTENT),
)
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


@payments_admin_router.get("/withdrawals", responses=raises(Forbidden))
async def admin_withdrawals(
    _: StaffPrincipal,
    session: SessionDep,
    page: PageDep,
    status: WithdrawalStatus | None = None,
    user_id: uuid.UUID | None = None,
) -> Page[WithdrawalOut]:
    """Staff: every withdrawal, filtered by status and user (pending ones await a decision)."""
    rows, total = await paginate(session, service.withdrawals_query(user_id, status), page)
    return Page.build([WithdrawalOut.model_validate(r) for r in rows], total, page)


@payments_admin_router.post(
    "/withdrawals/{withdrawal_id}/approve",
    responses=raises(Forbidden, NotFound, Conflict, *IDEMPOTENT),
)
@idempotent
async def approve_withdrawal(
    withdrawal_id: uuid.UUID, staff: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> WithdrawalOut:
    """Staff: pay out a pending withdrawal; its held amount leaves the wallet."""
    withdrawal = await service.approve_withdrawal(session, rt, staff, withdrawal_id)
    return WithdrawalOut.model_validate(withdrawal)


@payments_admin_router.post(
    "/withdrawals/{withdrawal_id}/reject",
    responses=raises(Forbidden, NotFound, Conflict, *IDEMPOTENT),
)
@idempotent
async def reject_withdrawal(
    withdrawal_id: uuid.UUID,
    staff: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    body: DecisionIn | None = None,
) -> WithdrawalOut:
    """Staff: refuse a pending withdrawal, optionally with a reason; the hold is given back."""
    withdrawal = await service.reject_withdrawal(
        session, rt, staff, withdrawal_id, body.reason if body else None
    )
    return WithdrawalOut.model_validate(withdrawal)
