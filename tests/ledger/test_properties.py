"""Random sequences of ledger operations keep the books: every entry sums to zero, the trial
balance is zero, balances equal the sum of their postings, and no available balance goes below
zero except by a settlement charge; posted one by one or in all-or-nothing batches."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.errors import InsufficientFunds
from gridex.ledger.models import AccountKind, JournalEntry, LedgerAccount, Posting
from tests.factories import make_user
from tests.ledger.helpers import verify

KINDS = ["fund", "reserve", "release", "capture", "transfer", "charge", "debit"]
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=1, max_value=60),
    ),
    min_size=1,
    max_size=30,
)


@dataclass
class Model:
    available: list[int] = field(default_factory=lambda: [0, 0, 0])
    reserved: list[int] = field(default_factory=lambda: [0, 0, 0])
    escrow: list[int] = field(default_factory=lambda: [0, 0, 0])
    charged: list[bool] = field(default_factory=lambda: [False] * 3)

    def allows(self, kind: str, a: int, b: int, amount: int) -> bool:
        if kind in ("reserve", "transfer", "debit"):
            return self.available[a] >= amount
        if kind in ("release", "capture"):
            return self.reserved[a] >= amount
        return True

    def apply(self, kind: str, a: int, b: int, amount: int) -> None:
        if kind == "fund":
            self.available[a] += amount
        elif kind == "reserve":
            self.available[a] -= amount
            self.reserved[a] += amount
        elif kind == "release":
            self.reserved[a] -= amount
            self.available[a] += amount
        elif kind == "capture":
            self.reserved[a] -= amount
            self.escrow[a] += amount
        elif kind == "transfer":
            self.available[a] -= amount
            self.available[b] += amount
        elif kind in ("charge", "debit"):
            self.available[a] -= amount
            self.charged[a] |= kind == "charge"


async def _run(rt: Runtime, users: list, kind: str, a: int, b: int, amount: int) -> None:  # type: ignore[type-arg]
    now = rt.clock.now()
    async with rt.db.sessionmaker() as session:
        ua, ub = users[a].id, users[b].id
        if kind == "fund":
            await ledger.credit(
                session,
                at=now,
                user_id=ua,
                amount_micros=amount,
                source=ledger.DEPOSITS,
                type="topup",
                description="",
            )
        elif kind == "reserve":
            await ledger.reserve(session, at=now, user_id=ua, amount_micros=amount)
        elif kind == "release":
            await ledger.release(session, at=now, user_id=ua, amount_micros=amount)
        elif kind == "capture":
            await ledger.capture(session, at=now, user_id=ua, amount_micros=amount)
        elif kind == "transfer":
            await ledger.transfer(
                session,
                at=now,
                source=ledger.user_account(ua),
                destination=ledger.user_account(ub),
                amount_micros=amount,
            )
        elif kind == "charge":
            await ledger.charge(session, at=now, user_id=ua, amount_micros=amount, description="")
        else:
            await ledger.debit(
                session,
                at=now,
                user_id=ua,
                amount_micros=amount,
                destination=ledger.FEES,
                type="adjustment",
                description="",
            )
        await session.commit()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS)
async def test_random_operations_keep_the_books(
    runtime: Runtime, operations: list[tuple[str, int, int, int]]
) -> None:
    users = [await make_user(runtime) for _ in range(3)]
    model = Model()
    for kind, a, b, amount in operations:
        expected = model.allows(kind, a, b, amount)
        try:
            await _run(runtime, users, kind, a, b, amount)
        except InsufficientFunds:
            assert not expected, (kind, a, b, amount, model)
        else:
            assert expected, (kind, a, b, amount, model)
            model.apply(kind, a, b, amount)
        for i in range(3):
            if not model.charged[i]:
                assert model.available[i] >= 0

    for i, user in enumerate(users):
        async with runtime.db.sessionmaker() as session:
            money = await ledger.wallet_balances(session, user.id)
        assert money.available_micros == model.available[i]
        assert money.reserved_micros == model.reserved[i]
        assert money.escrow_pending_micros == model.escrow[i]
        assert money.reserved_micros >= 0
        if not model.charged[i]:
            assert money.available_micros >= 0
    report = await verify(runtime)
    assert report.ok, report.problems
    assert report.trial_balance_micros == 0
    async with runtime.db.sessionmaker() as session:
        total = await session.scalar(select(func.sum(LedgerAccount.balance_micros)))
    assert int(total or 0) == 0


def _entry(users: list, kind: str, a: int, b: int, amount: int) -> ledger.NewEntry:  # type: ignore[type-arg]
    """The entry ``_run`` would post for one operation, for a batch."""
    ua, ub = users[a].id, users[b].id
    available, reserved = ledger.user_account(ua), ledger.user_account(ua, AccountKind.reserved)
    legs = {
        "fund": [ledger.Leg(ledger.DEPOSITS, -amount), ledger.Leg(available, amount)],
        "reserve": [ledger.Leg(available, -amount), ledger.Leg(reserved, amount)],
        "release": [ledger.Leg(reserved, -amount), ledger.Leg(available, amount)],
        "capture": [ledger.Leg(reserved, -amount), ledger.Leg(ledger.ESCROW, amount, ua)],
        "transfer": [ledger.Leg(available, -amount), ledger.Leg(ledger.user_account(ub), amount)],
        "charge": [
            ledger.Leg(available, -amount, allow_debt=True),
            ledger.Leg(ledger.GRID, amount),
        ],
        "debit": [ledger.Leg(available, -amount), ledger.Leg(ledger.FEES, amount)],
    }[kind]
    return ledger.NewEntry(kind, legs, description=f"{kind} {amount}")


async def _books(rt: Runtime) -> tuple[int, int, list[tuple[object, int]]]:
    async with rt.db.sessionmaker() as session:
        entries = await session.scalar(select(func.count()).select_from(JournalEntry))
        postings = await session.scalar(select(func.count()).select_from(Posting))
        accounts = await session.execute(
            select(LedgerAccount.id, LedgerAccount.balance_micros).order_by(LedgerAccount.id)
        )
        return int(entries or 0), int(postings or 0), [(i, int(b)) for i, b in accounts]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(OPERATIONS, min_size=1, max_size=6))
async def test_random_batches_keep_the_books(
    runtime: Runtime, batches: list[list[tuple[str, int, int, int]]]
) -> None:
    """Each batch posts all its entries or none: a batch is refused exactly when one of its
    operations, applied in order after the earlier ones, would not be allowed one by one."""
    users = [await make_user(runtime) for _ in range(3)]
    model = Model()
    for batch in batches:
        trial = copy.deepcopy(model)
        expected = True
        for kind, a, b, amount in batch:
            if not trial.allows(kind, a, b, amount):
                expected = False
                break
            trial.apply(kind, a, b, amount)
        before = await _books(runtime)
        async with runtime.db.sessionmaker() as session:
            try:
                posted = await ledger.post_entries(
                    session,
                    [_entry(users, *operation) for operation in batch],
                    at=runtime.clock.now(),
                )
                await session.commit()
            except InsufficientFunds:
                await session.commit()  # commits nothing: the refused batch left no trace
                assert not expected, (batch, model)
                assert await _books(runtime) == before
                continue
        assert expected, (batch, model)
        assert len(posted) == len(batch)
        for entry in posted:
            assert sum(leg.amount_micros for leg in entry.legs) == 0
        model = trial
        for i in range(3):
            if not model.charged[i]:
                assert model.available[i] >= 0

    for i, user in enumerate(users):
        async with runtime.db.sessionmaker() as session:
            money = await ledger.wallet_balances(session, user.id)
        assert money.available_micros == model.available[i]
        assert money.reserved_micros == model.reserved[i]
        assert money.escrow_pending_micros == model.escrow[i]
        if not model.charged[i]:
            assert money.available_micros >= 0
    report = await verify(runtime)
    assert report.ok, report.problems
    assert report.trial_balance_micros == 0
