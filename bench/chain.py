"""Benchmark of the chain mirror on LiteSVM; prints one JSON line per database.

Run as ``.venv/bin/python bench/chain.py`` from the repository root. PostgreSQL comes from
``GRIDEX_BENCH_DATABASE_URL`` (default: database ``bench`` on the local server; its schema is
dropped and rebuilt); SQLite uses a temporary file.

Seed (not timed): settlement's bench epoch (``bench/settlement.py``) with ``TRADES`` trades
between ``PARTICIPANTS`` users, mirrored up to the settlement (wallets opened, escrow minted),
then settled. Timed, end to end: the mirror job from the settlement's ledger entries to every
outbox transaction confirmed on LiteSVM (journal read, planning, signing, the database writes of
both outbox steps, execution by the SPL programs, the snapshot). ``trades_per_s`` = trades /
seconds.

``hot_account_share``: the largest share of the settlement transactions that write one account
(fee payer included); the settlement lanes keep it near 1/8 instead of 1.

``raw_tx_per_s``: the same process building, signing and sending single SPL
``transfer_checked`` transactions (one transfer each) to a fresh LiteSVM with the same
instruction builder, no database. ``ratio`` = trades_per_s / raw_tx_per_s (a settlement
transaction moves several trades, so above 1 is possible). ``cu_per_transfer``: compute units of
the settlement transactions over the token movements in them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction
from sqlalchemy import func, select, update

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.settlement as seeded
from bench.ledger import DEFAULT_PG, _prepare_postgres
from gridex.app import build_runtime
from gridex.chain.jobs import mirror
from gridex.chain.litesvm import LiteSVMBackend
from gridex.chain.models import ChainTransaction
from gridex.chain.node import chain_of
from gridex.chain.repository import outbox_depth
from gridex.chain.tokens import Platform, unpack
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.config import Settings
from gridex.core.migrate import upgrade
from gridex.core.runtime import Runtime
from gridex.market.engine import Trade as EngineTrade
from gridex.market.engine import trades_hash
from gridex.market.models import Epoch, Trade
from gridex.market.settlement import settle_epoch

TRADES = 10_000
PARTICIPANTS = 400
RAW_TRANSFERS = 5_000


async def _hash(rt: Runtime, epoch_id: uuid.UUID) -> None:
    """Give the seeded epoch its real trades hash, so memos carry it."""
    async with rt.db.sessionmaker() as session:
        rows = await session.scalars(
            select(Trade).where(Trade.epoch_id == epoch_id).order_by(Trade.seq)
        )
        engine_trades = [
            EngineTrade(str(t.buy_order_id), str(t.sell_order_id), t.quantity_wh, t.price_micros)
            for t in rows
        ]
        epoch = await session.get(Epoch, epoch_id)
        assert epoch is not None
        await session.execute(
            update(Epoch)
            .where(Epoch.id == epoch_id)
            .values(trades_hash=trades_hash(engine_trades, utc_iso(epoch.start)))
        )
        await session.commit()


async def _drain(rt: Runtime) -> None:
    """Mirror job runs (each yields after its time budget) until nothing is left to send."""
    while True:
        await mirror(rt)
        async with rt.db.sessionmaker() as session:
            if await outbox_depth(session) == 0:
                return


async def run(db_name: str, url: str, data_dir: Path) -> dict[str, object]:
    if db_name == "postgresql":
        await _prepare_postgres(url)
    await asyncio.to_thread(upgrade, url)
    clock = FrozenClock()
    clock.set(seeded.START + timedelta(minutes=20))
    settings = Settings(
        _env_file=None,
        env="test",
        database_url=url,
        run_jobs=False,
        epoch_minutes=1,
        log_json=False,
        data_dir=data_dir,
        chain="litesvm",
    )
    rt = build_runtime(settings, clock)
    try:
        # The settlement bench's seed at this size (its module constants set the size).
        seeded.TRADES, seeded.PARTICIPANTS = TRADES, PARTICIPANTS
        epoch_id = await seeded._seed(rt)
        await _hash(rt, epoch_id)
        await _drain(rt)  # wallets opened and escrow minted: not timed
        async with rt.db.sessionmaker() as session:
            assert await settle_epoch(session, rt, epoch_id)
            await session.commit()
        start = time.perf_counter()
        await _drain(rt)
        seconds = time.perf_counter() - start
        async with rt.db.sessionmaker() as session:
            units, transfers, count = (
                await session.execute(
                    select(
                        func.sum(ChainTransaction.compute_units),
                        func.sum(ChainTransaction.transfers),
                        func.count(),
                    ).where(ChainTransaction.kind == "settlement")
                )
            ).one()
            pending = await session.scalar(
                select(func.count()).where(ChainTransaction.status != "confirmed")
            )
        assert pending == 0, pending
        hot = await _hot_account_share(rt)
        return {
            "db": db_name,
            "trades": TRADES,
            "seconds": round(seconds, 3),
            "trades_per_s": round(TRADES / seconds),
            "settlement_transactions": int(count),
            "cu_per_transfer": round(int(units) / int(transfers), 1),
            "hot_account_share": hot,
        }
    finally:
        await rt.db.dispose()


async def _hot_account_share(rt: Runtime) -> float:
    """The largest share of the epoch's settlement transactions that write one account (the
    fee payer included): 1.0 means one account serialises the whole batch on a chain that runs
    transactions in parallel."""
    chain = chain_of(rt)
    async with rt.db.sessionmaker() as session:
        rows = (
            await session.execute(
                select(ChainTransaction.instructions, ChainTransaction.lane).where(
                    ChainTransaction.kind == "settlement"
                )
            )
        ).all()
    writes: Counter[Pubkey] = Counter()
    for instructions, lane in rows:
        payer = chain.keypair if lane is None else chain.lane_payers[lane]
        writable = {payer.pubkey()} | {
            m.pubkey for i in unpack(instructions) for m in i.accounts if m.is_writable
        }
        writes.update(writable)
    return round(max(writes.values()) / len(rows), 3)


async def raw_transfers(data_dir: Path) -> float:
    """Single ``transfer_checked`` transactions per second: build, sign, send."""
    payer = Keypair()
    backend = LiteSVMBackend(data_dir, fee_payers=[payer.pubkey()])
    await backend.ensure_funded(payer.pubkey(), 10**12)
    platform = Platform.of(payer.pubkey())
    blockhash = await backend.blockhash()
    setup = platform.create_mints(await backend.rent_exempt(82), await backend.rent_exempt(165))
    message = Message.new_with_blockhash(setup, payer.pubkey(), blockhash.hash)
    assert (await backend.send(Transaction([payer], message, blockhash.hash))).confirmed
    minted = Message.new_with_blockhash(
        [platform.mint_credit(platform.escrow, 10**12)], payer.pubkey(), blockhash.hash
    )
    assert (await backend.send(Transaction([payer], minted, blockhash.hash))).confirmed
    start = time.perf_counter()
    for i in range(RAW_TRANSFERS):
        # Alternate directions so every transaction is distinct (its own signature).
        source, dest = (
            (platform.escrow, platform.fees) if i % 2 == 0 else (platform.fees, platform.escrow)
        )
        instruction = platform.transfer_credit(source, dest, 1 + i // 2)
        message = Message.new_with_blockhash([instruction], payer.pubkey(), blockhash.hash)
        result = await backend.send(Transaction([payer], message, blockhash.hash))
        assert result.confirmed, result.error
    return RAW_TRANSFERS / (time.perf_counter() - start)


async def main() -> None:
    pg_url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or DEFAULT_PG
    for db_name in ("postgresql", "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            url = pg_url if db_name == "postgresql" else f"sqlite+aiosqlite:///{tmp}/bench.db"
            result = await run(db_name, url, Path(tmp))
            raw = await raw_transfers(Path(tmp) / "raw")
        trades_per_s = int(result["trades_per_s"])  # type: ignore[call-overload]
        print(
            json.dumps(
                {
                    "bench": "chain",
                    **result,
                    "raw_tx_per_s": round(raw),
                    "ratio": round(trades_per_s / raw, 2),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
