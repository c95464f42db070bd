"""Typed helpers for ledger and payment tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from gridex.core.runtime import Runtime
from gridex.ledger import repository
from gridex.ledger import service as ledger
from gridex.ledger.models import EntryType
from gridex.payments import providers
from gridex.payments.service import webhook_secret
from tests.factories import API, Account


async def fund(rt: Runtime, user_id: uuid.UUID, micros: int) -> None:
    """Credit a wallet straight through the service (as a succeeded top-up would)."""
    async with rt.db.sessionmaker() as session:
        await ledger.credit(
            session,
            at=rt.clock.now(),
            user_id=user_id,
            amount_micros=micros,
            source=ledger.DEPOSITS,
            type=EntryType.topup,
            description="test funds",
        )
        await session.commit()


async def balances(rt: Runtime, user_id: uuid.UUID) -> ledger.WalletBalances:
    async with rt.db.sessionmaker() as session:
        return await ledger.wallet_balances(session, user_id)


async def verify(rt: Runtime) -> repository.VerifyReport:
    async with rt.db.sessionmaker() as session:
        return await repository.verify(session)


def signed(rt: Runtime, event: dict[str, Any], *, at: Any = None) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(event)
    header = providers.sign(webhook_secret(rt.settings), body, at or rt.clock.now())
    return body, {providers.SIGNATURE_HEADER: header, "Content-Type": "application/json"}


def succeeded_event(intent: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": "payment_intent.succeeded",
        "data": {"payment_intent_id": intent["id"], "amount": intent["amount"]},
    }


async def topup(
    client: httpx.AsyncClient, rt: Runtime, account: Account, amount: str
) -> dict[str, Any]:
    """A top-up through HTTP, completed by a signed webhook; returns the intent."""
    created = await client.post(
        f"{API}/wallet/topups", json={"amount": amount}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    intent: dict[str, Any] = created.json()
    body, headers = signed(rt, succeeded_event(intent))
    done = await client.post(f"{API}/payments/webhook", content=body, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["outcome"] == "credited"
    return intent
