"""Top-ups (intent -> signed webhook -> one credit), refunds and withdrawals.

Ledger entries (all amounts micros):

* top-up succeeded: ``deposits`` -X, user ``available`` +X (``topup``)
* refund: user ``available`` -X, ``deposits`` +X (``refund``), never below zero
* withdrawal requested: ``available`` -X, ``reserved`` +X (``withdrawal_hold``)
* approved: ``reserved`` -X, ``payouts`` +X (``withdrawal_payout``)
* rejected: ``reserved`` -X, ``available`` +X (``withdrawal_release``)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.service import Principal
from gridex.core.config import Settings
from gridex.core.errors import Conflict, Forbidden, GridexError, NotFound, ValidationFailed
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money
from gridex.ledger import service as ledger
from gridex.ledger.models import AccountKind, EntryType, ReferenceType
from gridex.payments import providers, stripe_provider
from gridex.payments.models import (
    PaymentEvent,
    PaymentIntent,
    PaymentStatus,
    Refund,
    Withdrawal,
    WithdrawalStatus,
)
from gridex.payments.schemas import WebhookEvent, WebhookOut

log = structlog.get_logger(__name__)

SUCCEEDED = "payment_intent.succeeded"
FAILED = "payment_intent.failed"


class WebhookSignatureInvalid(GridexError):
    # 400, not 401: the provider is not an authenticated client of the API.
    code, status, default_message = "INVALID_SIGNATURE", 400, "The webhook signature is invalid"


def webhook_secret(settings: Settings) -> str:
    """The configured secret; outside production a key derived from ``GRIDEX_SECRET_KEY`` when
    none is set; in production without one, empty (every webhook is refused)."""
    if settings.payment_webhook_secret:
        return settings.payment_webhook_secret
    if settings.env == "production":
        return ""
    return hmac.new(
        settings.secret_key.encode(), b"gridex-payment-webhook", hashlib.sha256
    ).hexdigest()


def provider(rt: Runtime) -> providers.PaymentProvider:
    if rt.settings.payment_provider == stripe_provider.NAME:
        return _stripe(rt.settings.stripe_api_key)
    return providers.get_provider(rt.settings.payment_provider)


@functools.cache
def _stripe(api_key: str) -> stripe_provider.StripeProvider:
    return stripe_provider.StripeProvider.with_key(api_key)


@dataclass(frozen=True, slots=True)
class _Event:
    """A verified provider event, in Gridex's terms."""

    id: str
    type: str
    outcome: str | None  # "succeeded", "failed" or None (moves nothing)
    intent_id: uuid.UUID | None  # Gridex's payment id, when the event names it
    provider_ref: str | None  # the provider's id of the payment, when the event names it
    amount_micros: int | None
    currency: str | None
    provider: str | None  # the adapter whose signature it carries; None: Gridex-Signature


# Adapters whose payments only their own signed events complete.
_OWN_WEBHOOK = frozenset({stripe_provider.NAME})


def _audit(
    session: AsyncSession,
    *,
    at: datetime,
    action: str,
    actor: Principal | None,
    subject: PaymentIntent | Withdrawal,
    details: dict[str, Any],
) -> None:
    """Audit a payment or withdrawal action by ``actor`` (a user or their API key), or by the
    system when None (a provider's event)."""
    record(
        session,
        at=at,
        action=action,
        actor_id=actor.user.id if actor else None,
        actor_type=actor.actor_type if actor else "system",
        subject_type="withdrawal" if isinstance(subject, Withdrawal) else "payment",
        subject_id=subject.id,
        details=details,
    )


# --- top-ups -----------------------------------------------------------------------------------


async def create_topup(
    session: AsyncSession, rt: Runtime, principal: Principal, amount_micros: int
) -> PaymentIntent:
    """Open a payment intent; the wallet is credited only by its succeeded webhook."""
    now = rt.clock.now()
    intent_id = uuid.uuid4()
    adapter = provider(rt)
    opened = await adapter.create_intent(
        intent_id=intent_id, amount_micros=amount_micros, currency=rt.settings.currency
    )
    intent = PaymentIntent(
        id=intent_id,
        user_id=principal.user.id,
        provider=adapter.name,
        provider_ref=opened.provider_ref,
        client_secret=opened.client_secret,
        currency=rt.settings.currency,
        amount_micros=amount_micros,
        refunded_micros=0,
        status=PaymentStatus.pending.value,
        created_at=now,
        updated_at=now,
    )
    session.add(intent)
    await session.flush()
    _audit(
        session,
        at=now,
        action="payment.topup_created",
        actor=principal,
        subject=intent,
        details={"amount_micros": amount_micros, "provider": adapter.name},
    )
    return intent


def intents_query(user_id: uuid.UUID) -> Select[PaymentIntent]:
    return (
        select(PaymentIntent)
        .where(PaymentIntent.user_id == user_id)
        .order_by(PaymentIntent.created_at.desc(), PaymentIntent.id)
    )


# What a replayed event gets (also a concurrent duplicate that lost the race to record itself).
_DUPLICATE = WebhookOut(received=True, duplicate=True, outcome="ignored")


async def handle_webhook(
    session: AsyncSession, rt: Runtime, body: bytes, headers: Mapping[str, str]
) -> WebhookOut:
    """Verify and apply one provider event: Stripe's own events (``Stripe-Signature``) or the
    built-in provider's (``Gridex-Signature``). Each event id is applied once (a replay answers
    ``duplicate``) and each intent is credited at most once, whatever the events say."""
    stripe_signature = headers.get(stripe_provider.SIGNATURE_HEADER)
    if stripe_signature is not None:
        _check_signature(rt, rt.settings.stripe_webhook_secret, body, stripe_signature)
        return await _apply(session, rt, _stripe_event(stripe_provider.parse_event(body)))
    signature = headers.get(providers.SIGNATURE_HEADER)
    _check_signature(rt, webhook_secret(rt.settings), body, signature)
    return await _apply(session, rt, _builtin_event(body))


def _check_signature(rt: Runtime, secret: str, body: bytes, signature: str | None) -> None:
    """400 ``INVALID_SIGNATURE`` unless ``body`` is correctly signed and recent."""
    try:
        providers.verify(
            secret,
            body,
            signature,
            now=rt.clock.now(),
            tolerance=rt.settings.payment_webhook_tolerance_seconds,
        )
    except providers.SignatureError as exc:
        log.warning("payment_webhook_rejected", reason=str(exc))
        raise WebhookSignatureInvalid(details={"reason": str(exc)}) from exc


def _builtin_event(body: bytes) -> _Event:
    try:
        event = WebhookEvent.model_validate_json(body)
    except ValidationError as exc:
        fields = [{"loc": list(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        raise ValidationFailed("The event is not valid", details={"fields": fields}) from exc
    outcome = {SUCCEEDED: "succeeded", FAILED: "failed"}.get(event.type)
    return _Event(
        event.id,
        event.type,
        outcome,
        event.data.payment_intent_id,
        None,
        event.data.amount,
        None,
        None,
    )


def _stripe_event(event: stripe_provider.StripeEvent) -> _Event:
    return _Event(
        event.id,
        event.type,
        event.outcome,
        event.gridex_payment_id,
        event.payment_intent,
        event.amount_micros,
        event.currency,
        stripe_provider.NAME,
    )


async def _find_intent(session: AsyncSession, event: _Event) -> PaymentIntent | None:
    """The top-up an event is about: by the provider's payment id, else by Gridex's id."""
    intent = None
    if event.provider_ref is not None:
        intent = await session.scalar(
            select(PaymentIntent).where(PaymentIntent.provider_ref == event.provider_ref)
        )
    if intent is None and event.intent_id is not None:
        intent = await session.get(PaymentIntent, event.intent_id)
        if intent is not None and event.provider_ref not in (None, intent.provider_ref):
            return None  # names our id with another payment: not this top-up
    if intent is None or event.provider == intent.provider:
        return intent
    # The Gridex-signed webhook serves adapters without a webhook of their own; a payment of an
    # adapter that has one (Stripe) is completed only by that adapter's signed events.
    if event.provider is None and intent.provider not in _OWN_WEBHOOK:
        return intent
    return None


async def _apply(session: AsyncSession, rt: Runtime, event: _Event) -> WebhookOut:
    if await session.get(PaymentEvent, event.id) is not None:
        return _DUPLICATE
    intent = await _find_intent(session, event)
    if intent is None and event.provider is None:
        raise NotFound("No such payment intent")
    now = rt.clock.now()
    outcome = "ignored"
    # A Stripe account sends events of other business too: those are recorded and ignored
    # (a 2xx, or Stripe would retry them for days).
    if intent is not None and event.outcome is not None:
        outcome = await _complete(session, intent, event, now)
    if intent is not None and outcome == "credited":
        reference = ledger.Reference(ReferenceType.payment, intent.id)
        await ledger.wallet_changed(
            session, rt, intent.user_id, reason="topup", reference=reference, at=now
        )
    if not await _remember_event(session, event, intent.id if intent else None, outcome, now):
        return _DUPLICATE
    return WebhookOut(received=True, duplicate=False, outcome=outcome)


async def _complete(
    session: AsyncSession, intent: PaymentIntent, event: _Event, now: datetime
) -> str:
    """Move a pending intent to succeeded (crediting the wallet) or failed; returns the outcome,
    ``ignored`` when the intent was no longer pending (a second event changes nothing)."""
    if event.outcome == "succeeded" and event.amount_micros != intent.amount_micros:
        raise ValidationFailed(
            "The event's amount is not the intent's",
            details={"expected_micros": intent.amount_micros},
        )
    if event.currency is not None and event.currency != intent.currency.upper():
        raise ValidationFailed(
            "The event's currency is not the intent's", details={"expected": intent.currency}
        )
    new_status = PaymentStatus.succeeded if event.outcome == "succeeded" else PaymentStatus.failed
    moved = await session.execute(
        update(PaymentIntent)
        .where(PaymentIntent.id == intent.id, PaymentIntent.status == PaymentStatus.pending.value)
        .values(status=new_status.value, updated_at=now, completed_at=now)
        .execution_options(synchronize_session="fetch")
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return "ignored"
    if new_status is PaymentStatus.succeeded:
        await ledger.credit(
            session,
            at=now,
            user_id=intent.user_id,
            amount_micros=intent.amount_micros,
            source=ledger.DEPOSITS,
            type=EntryType.topup,
            description=f"Top-up via {intent.provider}",
            reference=ledger.Reference(ReferenceType.payment, intent.id),
        )
    _audit(
        session,
        at=now,
        action=f"payment.{new_status.value}",
        actor=None,
        subject=intent,
        details={"event_id": event.id, "amount_micros": intent.amount_micros},
    )
    return "credited" if new_status is PaymentStatus.succeeded else "failed"


async def _remember_event(
    session: AsyncSession, event: _Event, intent_id: uuid.UUID | None, outcome: str, now: datetime
) -> bool:
    """Record the event id as applied; False when a concurrent duplicate recorded it first.

    That duplicate found the intent no longer pending (the first committed before this insert
    could fail on the event id's primary key), so it moved no money.
    """
    try:
        async with session.begin_nested():
            session.add(
                PaymentEvent(
                    id=event.id,
                    type=event.type,
                    intent_id=intent_id,
                    outcome=outcome,
                    received_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


async def complete_intent(
    session: AsyncSession,
    rt: Runtime,
    intent_id: uuid.UUID,
    *,
    succeeded: bool = True,
    actor: Principal | None = None,
) -> WebhookOut:
    """Development and test only: sign the provider's webhook for an intent and pass it through
    the same webhook code path, so that demos work without a payment provider."""
    if rt.settings.env == "production":
        raise Forbidden("Completing payments by hand is refused in production")
    intent = await session.get(PaymentIntent, intent_id)
    if intent is None:
        raise NotFound("No such payment intent")
    body = orjson.dumps(
        {
            "id": f"evt_dev_{uuid.uuid4().hex}",
            "type": SUCCEEDED if succeeded else FAILED,
            "data": {
                "payment_intent_id": str(intent.id),
                "amount": micros_to_money(intent.amount_micros),
            },
        }
    )
    header = providers.sign(webhook_secret(rt.settings), body, rt.clock.now())
    result = await handle_webhook(session, rt, body, {providers.SIGNATURE_HEADER: header})
    _audit(
        session,
        at=rt.clock.now(),
        action="payment.completed_by_hand",
        actor=actor,
        subject=intent,
        details={"succeeded": succeeded, "outcome": result.outcome},
    )
    return result


async def get_intent(session: AsyncSession, intent_id: uuid.UUID) -> PaymentIntent:
    intent = await session.get(PaymentIntent, intent_id)
    if intent is None:
        raise NotFound("No such payment")
    return intent


# --- refunds -------------------------------------------------------------------------------------


async def refund(
    session: AsyncSession,
    rt: Runtime,
    actor: Principal,
    intent_id: uuid.UUID,
    amount_micros: int | None,
    reason: str | None,
) -> Refund:
    """Refund a succeeded top-up, whole (default: all not yet refunded) or in part, through the
    provider: never more than the unrefunded amount (409 CONFLICT) nor than the user's available
    balance (409 INSUFFICIENT_FUNDS)."""
    intent = await get_intent(session, intent_id)
    if intent.status != PaymentStatus.succeeded.value:
        raise Conflict(
            "Only a succeeded payment can be refunded", details={"status": intent.status}
        )
    amount = (
        amount_micros
        if amount_micros is not None
        else intent.amount_micros - intent.refunded_micros
    )
    if amount <= 0:
        raise Conflict("This payment is refunded in full already")
    now = rt.clock.now()
    taken = await session.execute(
        update(PaymentIntent)
        .where(
            PaymentIntent.id == intent.id,
            PaymentIntent.refunded_micros + amount <= PaymentIntent.amount_micros,
        )
        .values(refunded_micros=PaymentIntent.refunded_micros + amount, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            "The refund is more than the unrefunded amount",
            details={"refundable": micros_to_money(intent.amount_micros - intent.refunded_micros)},
        )
    refund_id = uuid.uuid4()
    await ledger.debit(
        session,
        at=now,
        user_id=intent.user_id,
        amount_micros=amount,
        destination=ledger.DEPOSITS,
        type=EntryType.refund,
        description=f"Refund of top-up {intent.id}",
        reference=ledger.Reference(ReferenceType.refund, refund_id),
    )
    done = await provider(rt).refund(provider_ref=intent.provider_ref, amount_micros=amount)
    row = Refund(
        id=refund_id,
        intent_id=intent.id,
        user_id=intent.user_id,
        amount_micros=amount,
        reason=reason,
        provider_ref=done.provider_ref,
        created_by=actor.user.id,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await ledger.wallet_changed(
        session,
        rt,
        intent.user_id,
        reason="refund",
        reference=ledger.Reference(ReferenceType.refund, refund_id),
        at=now,
    )
    _audit(
        session,
        at=now,
        action="payment.refunded",
        actor=actor,
        subject=intent,
        details={"refund_id": str(refund_id), "amount_micros": amount, "reason": reason},
    )
    return row


# --- withdrawals -------------------------------------------------------------------------------


async def request_withdrawal(
    session: AsyncSession, rt: Runtime, principal: Principal, amount_micros: int, destination: str
) -> Withdrawal:
    """Hold the amount (``available`` -> ``reserved``) until an operator decides."""
    user_id = principal.user.id
    await ledger.ensure_no_debt(session, user_id)
    now = rt.clock.now()
    withdrawal = Withdrawal(
        id=uuid.uuid4(),
        user_id=user_id,
        amount_micros=amount_micros,
        currency=rt.settings.currency,
        destination=destination,
        status=WithdrawalStatus.pending.value,
        requested_at=now,
    )
    await ledger.reserve(
        session,
        at=now,
        user_id=user_id,
        amount_micros=amount_micros,
        type=EntryType.withdrawal_hold,
        description="Withdrawal requested",
        reference=ledger.Reference(ReferenceType.withdrawal, withdrawal.id),
    )
    session.add(withdrawal)
    await session.flush()
    await ledger.wallet_changed(
        session,
        rt,
        user_id,
        reason="withdrawal_requested",
        reference=ledger.Reference(ReferenceType.withdrawal, withdrawal.id),
        at=now,
    )
    _audit(
        session,
        at=now,
        action="withdrawal.requested",
        actor=principal,
        subject=withdrawal,
        details={"amount_micros": amount_micros},
    )
    return withdrawal


def withdrawals_query(
    user_id: uuid.UUID | None = None, status: WithdrawalStatus | None = None
) -> Select[Withdrawal]:
    query = select(Withdrawal).order_by(Withdrawal.requested_at.desc(), Withdrawal.id)
    if user_id is not None:
        query = query.where(Withdrawal.user_id == user_id)
    if status is not None:
        query = query.where(Withdrawal.status == status.value)
    return query


async def _decide(
    session: AsyncSession,
    rt: Runtime,
    actor: Principal,
    withdrawal_id: uuid.UUID,
    status: WithdrawalStatus,
    reason: str | None,
) -> Withdrawal:
    withdrawal = await session.get(Withdrawal, withdrawal_id)
    if withdrawal is None:
        raise NotFound("No such withdrawal")
    now = rt.clock.now()
    # Conditional on `pending`: of two concurrent decisions exactly one moves the money.
    moved = await session.execute(
        update(Withdrawal)
        .where(Withdrawal.id == withdrawal.id, Withdrawal.status == WithdrawalStatus.pending.value)
        .values(status=status.value, decided_at=now, decided_by=actor.user.id, reason=reason)
        .execution_options(synchronize_session="fetch")
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        await session.refresh(withdrawal)
        raise Conflict("The withdrawal is decided already", details={"status": withdrawal.status})
    reference = ledger.Reference(ReferenceType.withdrawal, withdrawal.id)
    reserved = ledger.user_account(withdrawal.user_id, AccountKind.reserved)
    if status is WithdrawalStatus.approved:
        await ledger.transfer(
            session,
            at=now,
            source=reserved,
            destination=ledger.PAYOUTS,
            amount_micros=withdrawal.amount_micros,
            type=EntryType.withdrawal_payout,
            description=f"Withdrawal to {withdrawal.destination}",
            reference=reference,
            on_behalf_of=withdrawal.user_id,
        )
        paid = await provider(rt).payout(
            withdrawal_id=withdrawal.id,
            amount_micros=withdrawal.amount_micros,
            currency=withdrawal.currency,
            destination=withdrawal.destination,
        )
        withdrawal.provider_ref = paid.provider_ref
    else:
        await ledger.release(
            session,
            at=now,
            user_id=withdrawal.user_id,
            amount_micros=withdrawal.amount_micros,
            type=EntryType.withdrawal_release,
            description="Withdrawal rejected",
            reference=reference,
        )
    await session.flush()
    reason = f"withdrawal_{status.value}"
    await ledger.wallet_changed(
        session, rt, withdrawal.user_id, reason=reason, reference=reference, at=now
    )
    _audit(
        session,
        at=now,
        action=f"withdrawal.{status.value}",
        actor=actor,
        subject=withdrawal,
        details={"amount_micros": withdrawal.amount_micros, "reason": reason},
    )
    return withdrawal


async def approve_withdrawal(
    session: AsyncSession, rt: Runtime, actor: Principal, withdrawal_id: uuid.UUID
) -> Withdrawal:
    """Pay out a pending withdrawal: ``reserved`` -> ``payouts``, then the provider's payout."""
    return await _decide(session, rt, actor, withdrawal_id, WithdrawalStatus.approved, None)


async def reject_withdrawal(
    session: AsyncSession,
    rt: Runtime,
    actor: Principal,
    withdrawal_id: uuid.UUID,
    reason: str | None,
) -> Withdrawal:
    """Give a pending withdrawal back: ``reserved`` -> ``available``."""
    return await _decide(session, rt, actor, withdrawal_id, WithdrawalStatus.rejected, reason)
