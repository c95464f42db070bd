"""Typed helpers for the chain tests: run the mirror, read token balances, reconcile."""

from __future__ import annotations

import uuid
from pathlib import Path

from solders.pubkey import Pubkey

from gridex.chain.jobs import mirror
from gridex.chain.node import Chain, chain_of, close_chain
from gridex.chain.reconcile import Reconciliation, reconcile, token_amount
from gridex.chain.repository import wallets
from gridex.chain.service import ensure_ready
from gridex.core.runtime import Runtime


def chain_settings(data_dir: Path) -> dict[str, object]:
    return {"chain": "litesvm", "data_dir": data_dir, "chain_retry_base_seconds": 1.0}


async def mirrored(rt: Runtime) -> Chain:
    """Run the mirror job to the end (journal -> outbox -> chain)."""
    await mirror(rt)
    return chain_of(rt)


async def restart(rt: Runtime) -> Chain:
    """Drop the process's chain and open it again from the data dir, as a restart does."""
    await close_chain(rt)
    return await ensure_ready(rt)


async def address_of(rt: Runtime, user_id: uuid.UUID) -> Pubkey | None:
    async with rt.db.sessionmaker() as session:
        found = await wallets(session, [user_id])
    return Pubkey.from_string(found[user_id].address) if user_id in found else None


async def tokens(rt: Runtime, user_id: uuid.UUID) -> tuple[int, int]:
    """(credit micros, energy Wh) the user holds on chain."""
    owner = await address_of(rt, user_id)
    if owner is None:
        return 0, 0
    chain = chain_of(rt)
    credit, energy = await chain.backend.accounts(
        [chain.platform.credit_account(owner), chain.platform.energy_account(owner)]
    )
    return token_amount(credit.data if credit else None), token_amount(
        energy.data if energy else None
    )


async def reconciled(rt: Runtime, *, record: bool = False) -> Reconciliation:
    chain = await ensure_ready(rt)
    async with rt.db.sessionmaker() as session:
        result = await reconcile(session, chain, rt.clock.now(), record=record)
        await session.commit()
    return result
