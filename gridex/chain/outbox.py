"""Sending the outbox: sign, record, send, checkpoint, confirm.

The order of steps is what makes a crash harmless. A batch is signed and its signatures and
signed bytes are committed *before* anything is sent; then the transactions are sent in outbox
order; then the backend checkpoints; then the confirmations are committed. After a crash at any
point, a ``submitted`` row is checked by its signature first: confirmed -> recorded, unknown ->
the same signed bytes are sent again (the chain drops a duplicate signature), or, once their
blockhash has expired and they can never land, rebuilt with a new one. Nothing is applied
twice.

A refused transaction is retried with exponential backoff and stops the batch (later rows may
depend on it); after ``GRIDEX_CHAIN_MAX_ATTEMPTS`` it is ``failed`` and the queue moves on
(reconciliation then shows the difference). A chain that is down only delays the mirror: the
ledger never waits for it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import structlog
from solders.keypair import Keypair
from solders.message import Message
from solders.signature import Signature
from solders.transaction import Transaction
from sqlalchemy import Table, bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.chain import repository
from gridex.chain.backend import Blockhash, ChainUnavailable, TxStatus
from gridex.chain.keys import Sealed
from gridex.chain.mirror import MAX_TX_BYTES
from gridex.chain.models import ChainTransaction, OutboxStatus
from gridex.chain.node import Chain
from gridex.chain.service import ensure_ready
from gridex.chain.tokens import unpack
from gridex.core.runtime import Runtime
from gridex.market.models import Epoch

log = structlog.get_logger(__name__)
_table = cast(Table, ChainTransaction.__table__)


@dataclass
class Batch:
    """Rows signed and committed as ``submitted``, with what sending them gave."""

    ids: list[int] = field(default_factory=list)
    # id -> (signature, signed bytes) of the rows to send, in outbox order.
    signed: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    # id -> epoch of the rows that settle one.
    epochs: dict[int, uuid.UUID] = field(default_factory=dict)
    # id -> (signature, compute units) of the rows the chain confirmed.
    confirmed: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    # The first row the chain refused (it never landed), and why.
    refused: tuple[int, str] | None = None
    # The first row whose fate is unknown (the chain did not answer): checked by its
    # signature next time, never signed anew while it might still land.
    unsure: tuple[int, str] | None = None


async def _signers(session: AsyncSession, chain: Chain, row: repository.Due) -> list[Keypair]:
    """The fee payer first (a lane's payer, or the platform), the platform, and the custodial
    keys of a new wallet's setup transaction."""
    if row.lane is not None:
        return [chain.lane_payers[row.lane], chain.keypair]
    if not row.signers:
        return [chain.keypair]
    users = [uuid.UUID(u) for u in row.signers.split()]
    wallets = await repository.wallets(session, users)
    return [chain.keypair] + [
        chain.vault.open(user, Sealed(wallets[user].sealed_seed, wallets[user].key_id))
        for user in users
    ]


def tx_memo(row_id: int) -> str:
    """The memo of a transaction that has no epoch memo: it makes every outbox transaction
    unique, so two with the same movements (two equal top-ups of one user signed with the same
    blockhash) never share a signature, which the chain would take for a duplicate."""
    return f"gridex:tx={row_id}"


async def _sign(
    session: AsyncSession, chain: Chain, row: repository.Due, blockhash: Blockhash
) -> tuple[str, bytes, str]:
    """(signature, signed bytes, memo) of the row's transaction with ``blockhash``."""
    instructions = unpack(row.instructions)
    memo = row.memo
    if memo is None:
        memo = tx_memo(row.id)
        instructions.append(chain.platform.memo(memo))
    signers = await _signers(session, chain, row)
    message = Message.new_with_blockhash(instructions, signers[0].pubkey(), blockhash.hash)
    tx = Transaction(signers, message, blockhash.hash)
    signed = bytes(tx)
    if len(signed) > MAX_TX_BYTES:
        raise ValueError(f"transaction {row.id} is {len(signed)} bytes, over {MAX_TX_BYTES}")
    return str(tx.signatures[0]), signed, memo


async def prepare(rt: Runtime, chain: Chain) -> Batch:
    """Sign the due rows (or keep their signed bytes) and commit them as ``submitted``."""
    now = rt.clock.now()
    batch = Batch()
    async with rt.db.sessionmaker() as session:
        rows = await repository.due_transactions(session, now, rt.settings.chain_outbox_batch)
        if not rows:
            return batch
        height = await chain.backend.block_height()
        blockhash = await chain.backend.blockhash()
        signed_now = []
        for row in rows:
            batch.ids.append(row.id)
            if row.epoch_id is not None:
                batch.epochs[row.id] = row.epoch_id
            if row.status == OutboxStatus.submitted.value and row.signature and row.signed:
                status = await chain.backend.status(Signature.from_string(row.signature))
                if status is TxStatus.confirmed:
                    batch.confirmed[row.id] = (row.signature, None)
                    continue
                if status is TxStatus.unknown and height <= (row.last_valid_height or 0):
                    batch.signed[row.id] = (row.signature, row.signed)  # the same bytes again
                    continue
            signature, signed, memo = await _sign(session, chain, row, blockhash)
            batch.signed[row.id] = (signature, signed)
            signed_now.append(
                {"row": row.id, "signature": signature, "signed": signed, "memo": memo}
            )
        if signed_now:
            await session.execute(
                update(_table)
                .where(_table.c.id == bindparam("row"))
                .values(
                    signature=bindparam("signature"),
                    signed=bindparam("signed"),
                    memo=bindparam("memo"),
                    last_valid_height=blockhash.last_valid_height,
                    status=OutboxStatus.submitted.value,
                    submitted_at=now,
                ),
                signed_now,
            )
        await session.commit()
    return batch


async def send(chain: Chain, batch: Batch) -> None:
    """Send the batch's rows in order, stopping at the first the chain refuses."""
    for row_id, (signature, signed) in batch.signed.items():
        try:
            result = await chain.backend.send(Transaction.from_bytes(signed))
        except ChainUnavailable as exc:
            log.warning("chain_unavailable", id=row_id, error=str(exc))
            batch.unsure = (row_id, f"chain unavailable: {exc}")
            return
        if not result.confirmed:
            batch.refused = (row_id, result.error or "refused")
            return
        batch.confirmed[row_id] = (signature, result.compute_units)


async def _confirm(session: AsyncSession, batch: Batch, now: datetime) -> None:
    """Mark the confirmed rows (two statements whatever their number) and give each epoch
    its memo transaction: its first settlement transaction."""
    if not batch.confirmed:
        return
    await session.execute(
        update(_table)
        .where(_table.c.id.in_(list(batch.confirmed)))
        .values(
            status=OutboxStatus.confirmed.value,
            attempts=_table.c.attempts + 1,
            confirmed_at=now,
            error=None,
        )
    )
    measured = [
        {"row": row_id, "units": units}
        for row_id, (_, units) in batch.confirmed.items()
        if units is not None
    ]
    if measured:
        await session.execute(
            update(_table)
            .where(_table.c.id == bindparam("row"))
            .values(compute_units=bindparam("units")),
            measured,
        )
    first: dict[uuid.UUID, str] = {}
    for row_id in sorted(batch.confirmed):
        if row_id in batch.epochs:
            first.setdefault(batch.epochs[row_id], batch.confirmed[row_id][0])
    for epoch_id, signature in first.items():
        await session.execute(
            update(Epoch)
            .where(Epoch.id == epoch_id, Epoch.chain_signature.is_(None))
            .values(chain_signature=signature)
        )


async def record(rt: Runtime, batch: Batch) -> None:
    """Commit what the chain confirmed, and the refusal with its backoff."""
    now = rt.clock.now()
    settings = rt.settings
    async with rt.db.sessionmaker() as session:
        await _confirm(session, batch, now)
        for outcome, refused in ((batch.refused, True), (batch.unsure, False)):
            if outcome is None:
                continue
            row = await session.get(ChainTransaction, outcome[0])
            assert row is not None
            row.attempts += 1
            row.error = outcome[1][:500]
            delay = settings.chain_retry_base_seconds * 2 ** min(row.attempts - 1, 10)
            row.next_attempt_at = now + timedelta(seconds=delay)
            if refused:
                # A refused transaction never landed: it is signed anew next time.
                row.signature, row.signed, row.status = None, None, OutboxStatus.pending.value
                if row.attempts >= settings.chain_max_attempts:
                    row.status = OutboxStatus.failed.value
                    log.error("chain_transaction_failed", id=row.id, kind=row.kind, error=row.error)
        await session.commit()


async def process_outbox(rt: Runtime, *, deadline: float | None = None) -> int:
    """The outbox job: send the due transactions, round after round until none is left or
    ``time.monotonic()`` passes ``deadline``; returns how many were confirmed."""
    chain = await ensure_ready(rt)
    confirmed = 0
    async with chain.lock:
        while True:
            batch = await prepare(rt, chain)
            if not batch.ids:
                return confirmed
            await send(chain, batch)
            await chain.backend.checkpoint()
            await record(rt, batch)
            confirmed += len(batch.confirmed)
            stopped = batch.refused is not None or batch.unsure is not None
            late = deadline is not None and time.monotonic() > deadline
            if stopped or late or len(batch.ids) < rt.settings.chain_outbox_batch:
                return confirmed
