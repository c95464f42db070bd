"""The outbox: retries with backoff when the chain is down or refuses, nothing sent twice
after a crash between send and record, and reconciliation finds a planted difference."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from solders.account import Account
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction
from sqlalchemy import select

from gridex.app import build_runtime
from gridex.chain import outbox
from gridex.chain.backend import Blockhash, ChainBackend, ChainUnavailable, SendResult, TxStatus
from gridex.chain.jobs import reconcile_now
from gridex.chain.models import ChainMismatch, ChainTransaction, OutboxStatus
from gridex.chain.node import chain_of
from gridex.chain.service import ensure_ready, mirror_journal
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.chain.helpers import address_of, chain_settings, mirrored, reconciled, restart, tokens
from tests.conftest import make_settings
from tests.factories import make_user
from tests.ledger.helpers import fund


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, object]:
    return {**chain_settings(tmp_path), "chain_max_attempts": 3}


class Faulty:
    """The real backend behind a switch that makes ``send`` fail: the chain unreachable
    (``raises``) or refusing (``refuses``) for the next ``count`` sends."""

    def __init__(self, inner: ChainBackend, *, raises: int = 0, refuses: int = 0) -> None:
        self.inner, self.raises, self.refuses = inner, raises, refuses
        self.name, self.cluster = inner.name, inner.cluster
        self.sent = 0

    async def send(self, tx: Transaction) -> SendResult:
        if self.raises:
            self.raises -= 1
            raise ChainUnavailable("connection refused")
        if self.refuses:
            self.refuses -= 1
            return SendResult(False, error="BlockhashNotFound")
        self.sent += 1
        return await self.inner.send(tx)

    async def blockhash(self) -> Blockhash:
        return await self.inner.blockhash()

    async def block_height(self) -> int:
        return await self.inner.block_height()

    async def slot(self) -> int:
        return await self.inner.slot()

    async def rent_exempt(self, size: int) -> int:
        return await self.inner.rent_exempt(size)

    async def status(self, signature: Signature) -> TxStatus:
        return await self.inner.status(signature)

    async def accounts(self, addresses: Sequence[Pubkey]) -> list[Account | None]:
        return await self.inner.accounts(addresses)

    async def ensure_funded(self, address: Pubkey, lamports: int) -> None:
        await self.inner.ensure_funded(address, lamports)

    async def checkpoint(self) -> None:
        await self.inner.checkpoint()

    async def close(self) -> None:
        await self.inner.close()


async def _rows(rt: Runtime) -> list[ChainTransaction]:
    async with rt.db.sessionmaker() as session:
        return list(await session.scalars(select(ChainTransaction).order_by(ChainTransaction.id)))


async def test_a_chain_that_is_down_only_delays_the_mirror(
    runtime: Runtime, clock: FrozenClock
) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 2_000_000)
    chain = await ensure_ready(runtime)
    faulty = Faulty(chain.backend, raises=2)
    chain.backend = faulty
    await mirrored(runtime)
    first = await _rows(runtime)
    # Unsure whether the first transaction landed: kept with its signature, retried later.
    assert [r.status for r in first] == [OutboxStatus.submitted.value] * 2
    assert first[0].attempts == 1
    assert first[0].error == "chain unavailable: connection refused"
    assert first[0].next_attempt_at == clock.now() + timedelta(seconds=1)
    signature = first[0].signature
    await mirrored(runtime)  # not due yet: nothing is sent
    assert faulty.raises == 1

    clock.advance(timedelta(seconds=1))
    await mirrored(runtime)  # down again: the backoff doubles
    assert (await _rows(runtime))[0].next_attempt_at == clock.now() + timedelta(seconds=2)
    clock.advance(timedelta(seconds=2))
    await mirrored(runtime)
    rows = await _rows(runtime)
    assert [r.status for r in rows] == [OutboxStatus.confirmed.value] * 2
    assert rows[0].signature == signature  # the same transaction, not a new one
    assert await tokens(runtime, user.id) == (2_000_000, 0)
    assert (await reconciled(runtime)).ok


async def test_a_refused_transaction_is_retried_then_failed(
    runtime: Runtime, clock: FrozenClock
) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 1_000_000)
    chain = await ensure_ready(runtime)
    chain.backend = Faulty(chain.backend, refuses=3)
    for _ in range(3):
        await mirrored(runtime)
        clock.advance(timedelta(minutes=1))
    wallet_row, mint_row = await _rows(runtime)
    assert (wallet_row.status, wallet_row.attempts) == (OutboxStatus.failed.value, 3)
    assert wallet_row.error == "BlockhashNotFound"
    assert wallet_row.signature is None
    # The queue moved on; the mint cannot land without the token account.
    await mirrored(runtime)
    assert (await _rows(runtime))[1].attempts >= 1
    assert mint_row.kind == "mint_credit"


@pytest.mark.parametrize("checkpointed", [True, False])
async def test_a_crash_between_send_and_record_sends_nothing_twice(
    runtime: Runtime, checkpointed: bool
) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 3_000_000)
    chain = await ensure_ready(runtime)
    assert await mirror_journal(runtime) == 1
    batch = await outbox.prepare(runtime, chain)
    await outbox.send(chain, batch)
    assert len(batch.confirmed) == 2
    if checkpointed:
        await chain.backend.checkpoint()
    # The process dies here: the confirmations were never recorded.
    assert {r.status for r in await _rows(runtime)} == {OutboxStatus.submitted.value}

    await restart(runtime)
    await mirrored(runtime)
    rows = await _rows(runtime)
    assert {r.status for r in rows} == {OutboxStatus.confirmed.value}
    assert [r.signature for r in rows] == [
        str(Transaction.from_bytes(r.signed).signatures[0]) for r in rows if r.signed
    ]
    assert await tokens(runtime, user.id) == (3_000_000, 0)
    assert (await reconciled(runtime)).ok


async def test_reconciliation_finds_a_planted_difference(runtime: Runtime) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 1_500_000)
    chain = await mirrored(runtime)
    assert await reconcile_now(runtime) == 0

    # Tokens minted behind the ledger's back.
    owner = await address_of(runtime, user.id)
    assert owner is not None
    blockhash = await chain.backend.blockhash()
    instruction = chain.platform.mint_credit(chain.platform.credit_account(owner), 7)
    message = Message.new_with_blockhash([instruction], chain.platform.authority, blockhash.hash)
    sent = await chain.backend.send(Transaction([chain.keypair], message, blockhash.hash))
    assert sent.confirmed

    assert await reconcile_now(runtime) == 1
    result = await reconciled(runtime)
    (difference,) = result.mismatches
    assert (difference.account, difference.ledger_micros, difference.chain_micros) == (
        str(user.id),
        1_500_000,
        1_500_007,
    )
    assert difference.difference_micros == 7
    async with runtime.db.sessionmaker() as session:
        recorded = list(await session.scalars(select(ChainMismatch)))
    assert [(m.account, m.chain_micros - m.ledger_micros) for m in recorded] == [(str(user.id), 7)]
    assert chain_of(runtime) is chain


async def test_equal_movements_are_distinct_transactions(runtime: Runtime) -> None:
    """Two equal top-ups of one user, mirrored apart, signed with the same blockhash."""
    user = await make_user(runtime)
    await fund(runtime, user.id, 1_000)
    assert await mirror_journal(runtime) == 1
    await fund(runtime, user.id, 1_000)
    assert await mirror_journal(runtime) == 1
    await mirrored(runtime)
    rows = await _rows(runtime)
    assert [r.kind for r in rows] == ["account", "mint_credit", "mint_credit"]
    assert rows[1].instructions == rows[2].instructions
    assert rows[1].signature != rows[2].signature
    assert await tokens(runtime, user.id) == (2_000, 0)


async def test_an_entry_committed_late_is_still_mirrored(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """Entries are read from a look-back window behind the newest one handled, so one whose
    transaction took its time (an earlier timestamp, committed after) is not skipped."""
    early, late = await make_user(runtime), await make_user(runtime)
    await fund(runtime, early.id, 1_000)
    await mirrored(runtime)
    clock.advance(timedelta(minutes=-10))  # stamped before the entry already mirrored
    await fund(runtime, late.id, 2_000)
    clock.advance(timedelta(minutes=10))
    await mirrored(runtime)
    assert await tokens(runtime, late.id) == (2_000, 0)
    assert await tokens(runtime, early.id) == (1_000, 0)
    assert (await reconciled(runtime)).ok


async def test_processes_sharing_the_data_dir_read_and_send_from_the_latest_snapshot(
    runtime: Runtime, settings_overrides: dict[str, object]
) -> None:
    """Two processes (here two runtimes) on one database and data dir: the one that did not
    send reads current balances, and when it takes over the sending it starts from there."""
    other = build_runtime(make_settings(runtime.settings.database_url, **settings_overrides))
    try:
        user = await make_user(runtime)
        await ensure_ready(other)  # its LiteSVM is loaded before the first process sends
        await fund(runtime, user.id, 1_000)
        await mirrored(runtime)
        assert await tokens(other, user.id) == (1_000, 0)
        await fund(runtime, user.id, 500)
        await mirrored(other)  # the other process sends now
        assert await tokens(other, user.id) == (1_500, 0)
        assert await tokens(runtime, user.id) == (1_500, 0)
        assert (await reconciled(runtime)).ok
    finally:
        await other.db.dispose()
