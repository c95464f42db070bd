from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.errors import InsufficientFunds, OutstandingDebt, UnbalancedEntry
from gridex.ledger.models import AccountKind, EntryType, LedgerAccount, ReferenceType
from tests.factories import make_user
from tests.ledger.helpers import balances, fund, verify


async def test_reserve_release_capture_and_escrow_pending(runtime: Runtime) -> None:
    buyer = await make_user(runtime)
    await fund(runtime, buyer.id, 100)
    order = ledger.Reference(ReferenceType.order, uuid.uuid4())
    async with runtime.db.sessionmaker() as session:
        now = runtime.clock.now()
        entry = await ledger.reserve(
            session, at=now, user_id=buyer.id, amount_micros=70, reference=order
        )
        assert [
            leg.balance_after_micros
            for leg in entry.legs
            if leg.account.kind is AccountKind.available
        ] == [30]
        await ledger.capture(session, at=now, user_id=buyer.id, amount_micros=50, reference=order)
        await ledger.release(session, at=now, user_id=buyer.id, amount_micros=20, reference=order)
        await session.commit()
    money = await balances(runtime, buyer.id)
    assert (money.available_micros, money.reserved_micros, money.escrow_pending_micros) == (
        50,
        0,
        50,
    )
    report = await verify(runtime)
    assert report.ok, report.problems
    assert report.entries == 4


async def test_insufficient_funds_changes_nothing(runtime: Runtime) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 10)
    async with runtime.db.sessionmaker() as session:
        with pytest.raises(InsufficientFunds) as caught:
            await ledger.reserve(session, at=runtime.clock.now(), user_id=user.id, amount_micros=11)
        assert caught.value.details["balance"] == "0.000010"
        await session.rollback()
    # Nor can a user without any account yet spend, nor release what is not reserved.
    other = await make_user(runtime)
    async with runtime.db.sessionmaker() as session:
        with pytest.raises(InsufficientFunds):
            await ledger.reserve(session, at=runtime.clock.now(), user_id=other.id, amount_micros=1)
        with pytest.raises(InsufficientFunds):
            await ledger.release(session, at=runtime.clock.now(), user_id=user.id, amount_micros=1)
    assert (await balances(runtime, user.id)).available_micros == 10
    assert (await verify(runtime)).ok


async def test_unbalanced_entries_are_refused_in_code(runtime: Runtime) -> None:
    user = await make_user(runtime)
    account = ledger.user_account(user.id)
    async with runtime.db.sessionmaker() as session:
        for legs in (
            [ledger.Leg(account, 5)],
            [ledger.Leg(account, 5), ledger.Leg(ledger.DEPOSITS, -4)],
            [ledger.Leg(account, 0), ledger.Leg(ledger.DEPOSITS, 0)],
        ):
            with pytest.raises(UnbalancedEntry):
                await ledger.post_entry(
                    session,
                    at=runtime.clock.now(),
                    type=EntryType.adjustment,
                    legs=legs,
                    description="",
                )
        with pytest.raises(ValueError, match="positive"):
            await ledger.reserve(session, at=runtime.clock.now(), user_id=user.id, amount_micros=-1)


async def test_multi_leg_entry(runtime: Runtime) -> None:
    buyer, seller = await make_user(runtime), await make_user(runtime)
    await fund(runtime, buyer.id, 1_000)
    async with runtime.db.sessionmaker() as session:
        await ledger.post_entry(
            session,
            at=runtime.clock.now(),
            type=EntryType.settlement_payout,
            legs=[
                ledger.Leg(ledger.user_account(buyer.id), -1_000),
                ledger.Leg(ledger.user_account(seller.id), 990),
                ledger.Leg(ledger.FEES, 10),
            ],
            description="three legs",
        )
        await session.commit()
    assert (await balances(runtime, seller.id)).available_micros == 990
    assert (await verify(runtime)).ok


async def test_settlement_charge_may_create_debt_that_blocks(runtime: Runtime) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 5)
    async with runtime.db.sessionmaker() as session:
        await ledger.charge(
            session,
            at=runtime.clock.now(),
            user_id=user.id,
            amount_micros=8,
            description="shortfall",
        )
        await session.commit()
    async with runtime.db.sessionmaker() as session:
        assert await ledger.has_debt(session, user.id)
        with pytest.raises(OutstandingDebt):
            await ledger.ensure_no_debt(session, user.id)
        with pytest.raises(InsufficientFunds):
            await ledger.reserve(session, at=runtime.clock.now(), user_id=user.id, amount_micros=1)
    assert (await balances(runtime, user.id)).available_micros == -3
    await fund(runtime, user.id, 3)
    async with runtime.db.sessionmaker() as session:
        assert not await ledger.has_debt(session, user.id)
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_verify_detects_a_tampered_balance(runtime: Runtime) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 5)
    async with runtime.db.sessionmaker() as session:
        await session.execute(
            update(LedgerAccount)
            .where(LedgerAccount.id == ledger.user_account(user.id).id)
            .values(balance_micros=6)
        )
        await session.commit()
    report = await verify(runtime)
    assert not report.ok
    assert any("stored 6 != sum of postings 5" in p for p in report.problems)
    assert report.trial_balance_micros == 1


async def test_postings_and_entries_are_append_only(runtime: Runtime) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 5)
    for statement in (
        "UPDATE ledger_postings SET amount_micros = 6",
        "UPDATE ledger_entries SET description = 'changed'",
    ):
        async with runtime.db.sessionmaker() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement))
            await session.rollback()
    assert (await verify(runtime)).ok


async def test_postgres_refuses_an_unbalanced_entry_at_commit(runtime: Runtime) -> None:
    if runtime.db.is_sqlite:
        pytest.skip("the deferred balance trigger is PostgreSQL's; SQLite checks in code")
    user = await make_user(runtime)
    await fund(runtime, user.id, 5)
    async with runtime.db.sessionmaker() as session:
        entry = await session.scalar(text("SELECT id FROM ledger_entries LIMIT 1"))
        account = ledger.user_account(user.id).id
        await session.execute(
            text(
                "INSERT INTO ledger_postings (id, entry_id, account_id, user_id, amount_micros, "
                "balance_after_micros, created_at) VALUES (:id, :e, :a, NULL, 1, 6, now())"
            ),
            {"id": uuid.uuid4(), "e": entry, "a": account},
        )
        with pytest.raises(DBAPIError, match="unbalanced"):
            await session.commit()
    assert (await verify(runtime)).ok
