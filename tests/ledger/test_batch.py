"""The batch posting path: many entries in a constant number of statements, all or nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import Uuid, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError

from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.errors import InsufficientFunds, UnbalancedEntry
from gridex.ledger.models import (
    AccountKind,
    EntryType,
    JournalEntry,
    LedgerAccount,
    Posting,
    ReferenceType,
)
from tests.factories import make_user
from tests.ledger.helpers import balances, fund, verify


async def _counts(rt: Runtime) -> tuple[int, int, int, int]:
    async with rt.db.sessionmaker() as session:
        accounts = await session.scalar(select(func.count()).select_from(LedgerAccount))
        entries = await session.scalar(select(func.count()).select_from(JournalEntry))
        postings = await session.scalar(select(func.count()).select_from(Posting))
        total = await session.scalar(
            select(func.coalesce(func.sum(LedgerAccount.balance_micros), 0))
        )
    return int(accounts or 0), int(entries or 0), int(postings or 0), int(total or 0)


async def test_transfer_many_records_every_entry(runtime: Runtime) -> None:
    alice, bob = await make_user(runtime), await make_user(runtime)
    await fund(runtime, alice.id, 100)
    order = uuid.uuid4()
    now = runtime.clock.now()
    async with runtime.db.sessionmaker() as session:
        posted = await ledger.transfer_many(
            session,
            [
                ledger.Transfer(
                    ledger.user_account(alice.id),
                    ledger.user_account(bob.id),
                    30,
                    description="first",
                    reference=ledger.Reference(ReferenceType.order, order),
                ),
                ledger.Transfer(
                    ledger.user_account(alice.id),
                    ledger.user_account(bob.id),
                    50,
                    type=EntryType.adjustment,
                    description="x" * 600,
                ),
            ],
            at=now,
        )
        await session.commit()
    assert [p.type for p in posted] == ["transfer", "adjustment"]
    after = [
        {leg.account.user_id: leg.balance_after_micros for leg in entry.legs} for entry in posted
    ]
    assert after == [{alice.id: 70, bob.id: 30}, {alice.id: 20, bob.id: 80}]
    assert (await balances(runtime, alice.id)).available_micros == 20
    assert (await balances(runtime, bob.id)).available_micros == 80
    async with runtime.db.sessionmaker() as session:
        entries = {e.id: e for e in await session.scalars(select(JournalEntry))}
        first, second = entries[posted[0].id], entries[posted[1].id]
        stored = list(
            await session.scalars(select(Posting).where(Posting.entry_id == posted[1].id))
        )
    assert (first.reference_type, first.reference_id, first.description) == (
        "order",
        str(order),
        "first",
    )
    assert second.reference_type is None
    assert second.description == "x" * 500
    assert first.created_at == second.created_at == now
    assert sorted((p.user_id, p.amount_micros, p.balance_after_micros) for p in stored) == sorted(
        [(alice.id, -50, 20), (bob.id, 50, 80)]
    )
    assert all(p.created_at == now for p in stored)
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_entries_apply_in_order_and_create_accounts(runtime: Runtime) -> None:
    """A later entry may spend what an earlier one of the batch brought, also on accounts that
    did not exist before the batch; escrow is tagged with the user it moved for."""
    buyer = await make_user(runtime)
    reserved = ledger.user_account(buyer.id, AccountKind.reserved)
    async with runtime.db.sessionmaker() as session:
        await ledger.post_entries(
            session,
            [
                ledger.NewEntry(
                    EntryType.topup,
                    [
                        ledger.Leg(ledger.DEPOSITS, -90),
                        ledger.Leg(ledger.user_account(buyer.id), 90),
                    ],
                ),
                ledger.NewEntry(
                    EntryType.order_reserve,
                    [ledger.Leg(ledger.user_account(buyer.id), -90), ledger.Leg(reserved, 90)],
                ),
                ledger.NewEntry(
                    EntryType.trade_capture,
                    [ledger.Leg(reserved, -60), ledger.Leg(ledger.ESCROW, 60, buyer.id)],
                ),
            ],
            at=runtime.clock.now(),
        )
        await session.commit()
    money = await balances(runtime, buyer.id)
    assert (money.available_micros, money.reserved_micros, money.escrow_pending_micros) == (
        0,
        30,
        60,
    )
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_a_refused_batch_changes_nothing_and_names_the_leg(runtime: Runtime) -> None:
    alice, bob = await make_user(runtime), await make_user(runtime)
    await fund(runtime, alice.id, 100)
    await fund(runtime, bob.id, 10)
    newcomer = await make_user(runtime)
    before = await _counts(runtime)
    transfers = [
        # Fine on its own, and so is the second; the third needs more than bob then has.
        ledger.Transfer(ledger.user_account(alice.id), ledger.user_account(bob.id), 40),
        ledger.Transfer(ledger.user_account(alice.id), ledger.user_account(newcomer.id), 5),
        ledger.Transfer(ledger.user_account(bob.id), ledger.FEES, 51),
    ]
    async with runtime.db.sessionmaker() as session:
        with pytest.raises(InsufficientFunds) as caught:
            await ledger.transfer_many(session, transfers, at=runtime.clock.now())
        assert caught.value.details == {
            "account": "available",
            "user_id": str(bob.id),
            "balance": "0.000050",
            "required": "0.000051",
            "entry_index": 2,
        }
        # The caller may catch it and go on in the same transaction: nothing of it remains.
        await ledger.transfer_many(session, transfers[:2], at=runtime.clock.now())
        await session.commit()
    assert (await balances(runtime, alice.id)).available_micros == 55
    assert (await balances(runtime, bob.id)).available_micros == 50
    assert (await balances(runtime, newcomer.id)).available_micros == 5
    # One account more (the newcomer's), two entries of two postings, trial balance zero.
    assert await _counts(runtime) == (before[0] + 1, before[1] + 2, before[2] + 4, 0)
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_a_refused_batch_leaves_no_new_account(runtime: Runtime) -> None:
    poor, rich = await make_user(runtime), await make_user(runtime)
    await fund(runtime, rich.id, 10)
    before = await _counts(runtime)
    async with runtime.db.sessionmaker() as session:
        with pytest.raises(InsufficientFunds) as caught:
            await ledger.transfer_many(
                session,
                [
                    ledger.Transfer(ledger.user_account(rich.id), ledger.FEES, 10),
                    ledger.Transfer(ledger.user_account(poor.id), ledger.FEES, 1),
                ],
                at=runtime.clock.now(),
            )
        assert caught.value.details["user_id"] == str(poor.id)
        assert caught.value.details["entry_index"] == 1
        await session.commit()
    assert await _counts(runtime) == before
    assert (await balances(runtime, rich.id)).available_micros == 10


async def test_debt_only_where_a_leg_allows_it(runtime: Runtime) -> None:
    seller, buyer = await make_user(runtime), await make_user(runtime)
    await fund(runtime, seller.id, 5)
    charge = ledger.Transfer(
        ledger.user_account(seller.id), ledger.GRID, 8, type=EntryType.settlement_charge
    )
    async with runtime.db.sessionmaker() as session:
        with pytest.raises(InsufficientFunds):
            await ledger.transfer_many(session, [charge], at=runtime.clock.now())
        posted = await ledger.post_entries(
            session,
            [
                ledger.NewEntry(
                    EntryType.settlement_charge,
                    [
                        ledger.Leg(ledger.user_account(seller.id), -8, allow_debt=True),
                        ledger.Leg(ledger.GRID, 8, seller.id),
                    ],
                ),
                # The debt does not let the same account's unguarded legs spend further.
                ledger.NewEntry(
                    EntryType.settlement_credit,
                    [ledger.Leg(ledger.GRID, -4), ledger.Leg(ledger.user_account(buyer.id), 4)],
                ),
            ],
            at=runtime.clock.now(),
        )
        await session.commit()
    seller_leg = next(leg for leg in posted[0].legs if leg.account.user_id == seller.id)
    assert seller_leg.balance_after_micros == -3
    async with runtime.db.sessionmaker() as session:
        assert await ledger.has_debt(session, seller.id)
        with pytest.raises(InsufficientFunds):
            await ledger.transfer_many(
                session,
                [ledger.Transfer(ledger.user_account(seller.id), ledger.FEES, 1)],
                at=runtime.clock.now(),
            )
    with pytest.raises(ValueError, match="allow_debt"):
        ledger.Leg(ledger.user_account(seller.id, AccountKind.reserved), -1, allow_debt=True)
    assert (await balances(runtime, buyer.id)).available_micros == 4
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_unbalanced_entries_are_refused_before_anything_moves(runtime: Runtime) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 10)
    before = await _counts(runtime)
    account = ledger.user_account(user.id)
    async with runtime.db.sessionmaker() as session:
        with pytest.raises(UnbalancedEntry):
            await ledger.post_entries(
                session,
                [
                    ledger.NewEntry(
                        EntryType.adjustment, [ledger.Leg(account, -1), ledger.Leg(ledger.FEES, 1)]
                    ),
                    ledger.NewEntry(
                        EntryType.adjustment, [ledger.Leg(account, -1), ledger.Leg(ledger.FEES, 2)]
                    ),
                ],
                at=runtime.clock.now(),
            )
        with pytest.raises(ValueError, match="positive"):
            await ledger.transfer_many(
                session, [ledger.Transfer(account, ledger.FEES, 0)], at=runtime.clock.now()
            )
        assert await ledger.post_entries(session, [], at=runtime.clock.now()) == []
        await session.commit()
    assert await _counts(runtime) == before


async def test_same_postings_as_one_by_one(runtime: Runtime) -> None:
    """An entry whose legs touch one account twice, and a three-leg entry: the batch stores what
    post_entry would (legs in account order, each with its balance after)."""
    user, other = await make_user(runtime), await make_user(runtime)
    await fund(runtime, user.id, 100)
    account = ledger.user_account(user.id)
    async with runtime.db.sessionmaker() as session:
        posted = await ledger.post_entries(
            session,
            [
                ledger.NewEntry(
                    EntryType.adjustment,
                    [
                        ledger.Leg(account, -70),
                        ledger.Leg(account, 20),
                        ledger.Leg(ledger.FEES, 50),
                    ],
                ),
                ledger.NewEntry(
                    EntryType.settlement_payout,
                    [
                        ledger.Leg(ledger.FEES, -50),
                        ledger.Leg(ledger.user_account(other.id), 45),
                        ledger.Leg(account, 5),
                    ],
                ),
            ],
            at=runtime.clock.now(),
        )
        await session.commit()
    mine = [
        (leg.amount_micros, leg.balance_after_micros)
        for entry in posted
        for leg in entry.legs
        if leg.account == account
    ]
    assert mine == [(-70, 30), (20, 50), (5, 55)]
    for entry in posted:
        ids = [leg.account.id for leg in entry.legs]
        assert ids == sorted(ids)
    assert (await balances(runtime, other.id)).available_micros == 45
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_an_epoch_sized_batch_is_recorded_like_a_small_one(runtime: Runtime) -> None:
    """Many entries over a few accounts (the size clearing posts): every posting carries its
    running balance, a refusal anywhere in it changes nothing, and the books add up."""
    payers = [await make_user(runtime) for _ in range(3)]
    payee = await make_user(runtime)
    for payer in payers:
        await fund(runtime, payer.id, 100)
    transfers = [
        ledger.Transfer(ledger.user_account(payers[i % 3].id), ledger.user_account(payee.id), 3)
        for i in range(60)
    ]
    async with runtime.db.sessionmaker() as session:
        with pytest.raises(InsufficientFunds) as caught:
            await ledger.transfer_many(
                session,
                [*transfers, ledger.Transfer(ledger.user_account(payee.id), ledger.FEES, 181)],
                at=runtime.clock.now(),
            )
        assert caught.value.details["entry_index"] == 60
        assert caught.value.details["balance"] == "0.000180"
        posted = await ledger.transfer_many(session, transfers, at=runtime.clock.now())
        await session.commit()
    payee_after = [
        leg.balance_after_micros
        for entry in posted
        for leg in entry.legs
        if leg.account.user_id == payee.id
    ]
    assert payee_after == list(range(3, 181, 3))
    async with runtime.db.sessionmaker() as session:
        rows = await session.execute(
            select(Posting.entry_id, Posting.balance_after_micros).where(
                Posting.account_id == ledger.user_account(payee.id).id
            )
        )
        stored = {entry_id: after for entry_id, after in rows}
    assert [stored[entry.id] for entry in posted] == payee_after
    assert (await balances(runtime, payee.id)).available_micros == 180
    for payer in payers:
        assert (await balances(runtime, payer.id)).available_micros == 40
    report = await verify(runtime)
    assert report.ok, report.problems


async def _batch_in_own_session(
    rt: Runtime, user_id: uuid.UUID, receiver: uuid.UUID, start: asyncio.Event
) -> bool:
    await start.wait()
    half = 5_000_000
    async with rt.db.sessionmaker() as session:
        try:
            # Accounts listed in opposite orders in the two entries: the lock order is by id.
            await ledger.transfer_many(
                session,
                [
                    ledger.Transfer(ledger.user_account(user_id), ledger.FEES, half),
                    ledger.Transfer(
                        ledger.user_account(user_id), ledger.user_account(receiver), half
                    ),
                ],
                at=rt.clock.now(),
            )
            await asyncio.sleep(0.005)
            await session.commit()
        except InsufficientFunds:
            await session.rollback()
            return False
    return True


async def test_parallel_batches_only_the_ones_that_fit_win(runtime: Runtime) -> None:
    """12 concurrent batches of 10 against 75.5 on their own connections: exactly 7 commit."""
    user = await make_user(runtime)
    receivers = [await make_user(runtime) for _ in range(3)]
    await fund(runtime, user.id, 75_500_000)
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(_batch_in_own_session(runtime, user.id, receivers[i % 3].id, start))
        for i in range(12)
    ]
    await asyncio.sleep(0.05)
    start.set()
    assert sum(await asyncio.gather(*tasks)) == 7
    assert (await balances(runtime, user.id)).available_micros == 5_500_000
    report = await verify(runtime)
    assert report.ok, report.problems


async def _mixed(rt: Runtime, user_id: uuid.UUID, batch: bool, start: asyncio.Event) -> int:
    """Reserve 10 alone, or 10 plus a fee of 1 in a batch; returns what left `available`."""
    await start.wait()
    async with rt.db.sessionmaker() as session:
        try:
            if batch:
                await ledger.transfer_many(
                    session,
                    [
                        ledger.Transfer(
                            ledger.user_account(user_id),
                            ledger.user_account(user_id, AccountKind.reserved),
                            10,
                            type=EntryType.order_reserve,
                        ),
                        ledger.Transfer(ledger.user_account(user_id), ledger.FEES, 1),
                    ],
                    at=rt.clock.now(),
                )
            else:
                await ledger.reserve(session, at=rt.clock.now(), user_id=user_id, amount_micros=10)
            await asyncio.sleep(0.002)
            await session.commit()
        except InsufficientFunds:
            await session.rollback()
            return 0
    return 11 if batch else 10


async def test_batches_and_single_entries_race_on_new_accounts(runtime: Runtime) -> None:
    """Batches and single reservations racing to create the same `reserved` account: no
    deadlock, no error but refusals, and the books add up."""
    user = await make_user(runtime)
    await fund(runtime, user.id, 100)
    start = asyncio.Event()
    tasks = [asyncio.create_task(_mixed(runtime, user.id, i % 2 == 0, start)) for i in range(14)]
    await asyncio.sleep(0.05)
    start.set()
    spent = sum(await asyncio.gather(*tasks))
    money = await balances(runtime, user.id)
    assert spent > 0
    assert money.available_micros == 100 - spent >= 0
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_batch_rows_are_append_only_and_checked_at_commit(runtime: Runtime) -> None:
    """The triggers guard batch rows like any others: no UPDATE, and on PostgreSQL a posting
    that unbalances a batch entry is refused at commit."""
    user = await make_user(runtime)
    await fund(runtime, user.id, 10)
    async with runtime.db.sessionmaker() as session:
        posted = await ledger.transfer_many(
            session,
            [ledger.Transfer(ledger.user_account(user.id), ledger.FEES, 4)],
            at=runtime.clock.now(),
        )
        await session.commit()
    entry = posted[0].id
    for statement in (
        "UPDATE ledger_postings SET amount_micros = 5 WHERE entry_id = :entry",
        "UPDATE ledger_entries SET description = 'changed' WHERE id = :entry",
    ):
        async with runtime.db.sessionmaker() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(
                    text(statement).bindparams(bindparam("entry", type_=Uuid)), {"entry": entry}
                )
            await session.rollback()
    if not runtime.db.is_sqlite:
        async with runtime.db.sessionmaker() as session:
            await session.execute(
                text(
                    "INSERT INTO ledger_postings (id, entry_id, account_id, user_id, "
                    "amount_micros, balance_after_micros, created_at) "
                    "VALUES (:id, :entry, :account, NULL, 1, 7, now())"
                ),
                {"id": uuid.uuid4(), "entry": entry, "account": ledger.user_account(user.id).id},
            )
            with pytest.raises(DBAPIError, match="unbalanced"):
                await session.commit()
    report = await verify(runtime)
    assert report.ok, report.problems
