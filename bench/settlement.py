"""Benchmark of settlement: one delivered epoch settled in one transaction; one JSON line per db.

Run as ``.venv/bin/python bench/settlement.py`` from the repository root. PostgreSQL comes from
``GRIDEX_BENCH_DATABASE_URL`` (default: database ``bench`` on the local server, created when
missing; its schema is dropped and rebuilt by the migrations); SQLite uses a temporary file.

The seed (not timed): ``PARTICIPANTS`` users, half sellers and half buyers, one meter each with a
15-minute reading covering the one-minute epoch (random energy, so some sellers fall short and
some buyers under-consume), a tenth of the sellers' meters with revenue shares, one order per user
and ``TRADES`` trades between them, their value in escrow. Timed: :func:`settle_epoch` and the
commit. ``trades_per_s`` = trades / seconds; ``entries`` is the number of ledger entries it
posted (payouts, revenue shares, charges, credits), ``entries_per_s`` the same per second.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger import DEFAULT_PG, _prepare_postgres, bench_user
from gridex.app import build_runtime
from gridex.core.clock import FrozenClock
from gridex.core.config import Settings
from gridex.core.migrate import upgrade
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.models import EntryType, Installation, InstallationShare, JournalEntry
from gridex.market.engine import fee_micros, trade_value_micros
from gridex.market.models import Epoch, EpochState, MarketOrder, Mechanism, OrderType, Side, Trade
from gridex.market.settlement import settle_epoch
from gridex.meters.models import Meter, MeterKind, MeterReading

SEED = 20_260_304
PARTICIPANTS = 400
TRADES = 2_000
PRICE_MICROS = 150_000
START = datetime(2026, 3, 4, 12, 1, tzinfo=UTC)


async def _seed(rt: Runtime) -> uuid.UUID:
    rng = random.Random(SEED)
    now = START - timedelta(minutes=1)
    half = PARTICIPANTS // 2
    async with rt.db.sessionmaker() as session:
        users = [bench_user(now, region="bench") for _ in range(PARTICIPANTS)]
        session.add_all(users)
        await session.flush()
        epoch = Epoch(
            region="bench",
            start=START,
            end=START + timedelta(minutes=1),
            gate_closure=START - timedelta(seconds=10),
            state=EpochState.delivered,
            mechanism=Mechanism.auction,
            seq_counter=0,
            created_at=now,
        )
        session.add(epoch)
        await session.flush()
        meters: list[dict[str, object]] = []
        meter_ids: list[uuid.UUID] = []
        orders: list[MarketOrder] = []
        readings: list[dict[str, object]] = []
        for i, user in enumerate(users):
            side = Side.sell if i < half else Side.buy
            meter = uuid.uuid4()
            meter_ids.append(meter)
            meters.append(
                {
                    "id": meter,
                    "serial": f"B{uuid.uuid4().hex[:12]}",
                    "kind": MeterKind.production if side is Side.sell else MeterKind.consumption,
                    "status": "active",
                    "region": "bench",
                    "owner_id": user.id,
                    "capacity_w": 10**7,
                    "location": {},
                    "metadata": {},
                    "interval_minutes": 15,
                    "online": True,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            energy = rng.randint(0, 60_000)
            readings.append(
                {
                    "meter_id": meter,
                    "timestamp": START + timedelta(minutes=14),
                    "interval_minutes": 15,
                    "consumed_wh": energy if side is Side.buy else 0,
                    "produced_wh": energy if side is Side.sell else 0,
                    "source": "http",
                    "received_at": now,
                    "revision": 0,
                }
            )
            orders.append(
                MarketOrder(
                    user_id=user.id,
                    epoch_id=epoch.id,
                    region="bench",
                    epoch_start=START,
                    side=side,
                    type=OrderType.limit,
                    quantity_wh=10**6,
                    filled_wh=0,
                    filled_value_micros=0,
                    limit_price_micros=PRICE_MICROS,
                    effective_price_micros=PRICE_MICROS,
                    reserved_micros=0,
                    seq=i,
                    created_at=now,
                    updated_at=now,
                )
            )
        await session.execute(insert(Meter), meters)
        await session.execute(insert(MeterReading), readings)
        session.add_all(orders)
        await session.flush()
        for meter_id in meter_ids[: half // 10]:
            installation = Installation(
                meter_id=meter_id, platform_bp=2_000, created_at=now, updated_at=now
            )
            session.add(installation)
            await session.flush()
            session.add(
                InstallationShare(
                    installation_id=installation.id, user_id=users[-1].id, share_bp=8_000
                )
            )
        trades: list[dict[str, object]] = []
        escrow: dict[uuid.UUID, int] = {}
        for seq in range(TRADES):
            sell, buy = orders[seq % half], orders[half + rng.randrange(half)]
            quantity = rng.randint(10, 500)
            value = trade_value_micros(quantity, PRICE_MICROS)
            escrow[buy.user_id] = escrow.get(buy.user_id, 0) + value
            trades.append(
                {
                    "id": uuid.uuid4(),
                    "epoch_id": epoch.id,
                    "region": "bench",
                    "epoch_start": START,
                    "seq": seq,
                    "buy_order_id": buy.id,
                    "sell_order_id": sell.id,
                    "buyer_id": buy.user_id,
                    "seller_id": sell.user_id,
                    "quantity_wh": quantity,
                    "price_micros": PRICE_MICROS,
                    "value_micros": value,
                    "fee_micros": fee_micros(value, 100),
                    "executed_at": now,
                    "settlement_status": "pending",
                }
            )
        await session.execute(insert(Trade), trades)
        # Each buyer's trades in escrow on the buyer's behalf, as the clearing's captures put
        # them (the chain mirror keeps escrow in the buyer's lane).
        await ledger.transfer_many(
            session,
            [
                ledger.Transfer(
                    ledger.DEPOSITS,
                    ledger.ESCROW,
                    amount,
                    EntryType.trade_capture,
                    "bench escrow",
                    on_behalf_of=buyer,
                )
                for buyer, amount in sorted(escrow.items())
            ],
            at=now,
        )
        await session.commit()
        return epoch.id


async def run(db_name: str, url: str) -> dict[str, object]:
    if db_name == "postgresql":
        await _prepare_postgres(url)
    await asyncio.to_thread(upgrade, url)
    clock = FrozenClock()
    clock.set(START + timedelta(minutes=20))
    settings = Settings(
        _env_file=None,
        env="test",
        database_url=url,
        run_jobs=False,
        epoch_minutes=1,
        log_json=False,
    )
    rt = build_runtime(settings, clock)
    try:
        epoch_id = await _seed(rt)
        async with rt.db.sessionmaker() as session:
            before = int(await session.scalar(select(func.count()).select_from(JournalEntry)) or 0)
        start = time.perf_counter()
        async with rt.db.sessionmaker() as session:
            assert await settle_epoch(session, rt, epoch_id)
            await session.commit()
        seconds = time.perf_counter() - start
        async with rt.db.sessionmaker() as session:
            after = int(await session.scalar(select(func.count()).select_from(JournalEntry)) or 0)
            escrow = await ledger.balance_of(session, ledger.ESCROW)
        assert escrow == 0, escrow
        entries = after - before
        return {
            "bench": "settlement",
            "db": db_name,
            "trades": TRADES,
            "participants": PARTICIPANTS,
            "seconds": round(seconds, 3),
            "trades_per_s": round(TRADES / seconds),
            "entries": entries,
            "entries_per_s": round(entries / seconds),
        }
    finally:
        await rt.db.dispose()


async def main() -> None:
    pg_url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or DEFAULT_PG
    print(json.dumps(await run("postgresql", pg_url)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(await run("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db")), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
