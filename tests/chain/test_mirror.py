"""The mirror end to end on LiteSVM: token balances equal the ledger after top-ups, orders,
clearing, settlement with a shortfall and revenue shares, a debt and its repayment, and a
withdrawal; the memo of the epoch; a restart keeps the chain's state."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from solders.pubkey import Pubkey
from solders.token.state import Mint
from sqlalchemy import select

from gridex.auth.models import Role
from gridex.chain.models import ChainTransaction, OutboxStatus
from gridex.chain.node import Chain, chain_of
from gridex.chain.reconcile import token_amount
from gridex.chain.tokens import LANES, unpack
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.market.jobs import deliver_due, resettle_corrections, settle_due
from gridex.market.models import Epoch
from tests.chain.helpers import chain_settings, mirrored, reconciled, restart, tokens
from tests.factories import API, make_user, signed_in
from tests.ledger.helpers import fund
from tests.market.helpers import MARKET_SETTINGS, NEXT, close_and_clear, place, start_clock, trader
from tests.market.test_settlement_http import QUARTER_END, meter_of, send_reading


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, object]:
    return {**MARKET_SETTINGS, "access_token_minutes": 60, **chain_settings(tmp_path)}


async def _all_confirmed(rt: Runtime) -> list[ChainTransaction]:
    async with rt.db.sessionmaker() as session:
        rows = list(await session.scalars(select(ChainTransaction).order_by(ChainTransaction.id)))
    assert rows
    assert {r.status for r in rows} == {OutboxStatus.confirmed.value}, [
        (r.kind, r.status, r.error) for r in rows
    ]
    return rows


async def test_balances_follow_the_ledger_through_an_epoch(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    investor = await make_user(runtime, role=Role.investor)
    full_seller = await trader(client, runtime, kind=None, funds="0")
    short_seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    idle_buyer = await trader(client, runtime, kind=None)
    meters = {
        a.id: await meter_of(client, a, k)
        for a, k in (
            (full_seller, "production"),
            (short_seller, "bidirectional"),
            (buyer, "consumption"),
            (idle_buyer, "consumption"),
        )
    }
    shares = await client.post(
        f"{API}/installations",
        json={
            "meter_id": meters[full_seller.id]["id"],
            "shares": [
                {"user_id": str(full_seller.id), "percent": 45},
                {"user_id": str(investor.id), "percent": 35},
            ],
            "platform_percent": 20,
        },
        headers=operator.headers,
    )
    assert shares.status_code == 201, shares.text

    # Top-ups: credits minted to the buyers.
    await mirrored(runtime)
    assert await tokens(runtime, buyer.id) == (10_000_000, 0)
    assert (await reconciled(runtime)).ok

    for seller in (full_seller, short_seller):
        await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    for who in (buyer, idle_buyer):
        await place(client, who, side="buy", quantity_kwh=1, limit_price="0.30")
    # A reservation stays the user's money: nothing moves on chain.
    await mirrored(runtime)
    assert await tokens(runtime, buyer.id) == (10_000_000, 0)

    assert await close_and_clear(clock, runtime, NEXT) == 1
    chain = await mirrored(runtime)
    assert await tokens(runtime, buyer.id) == (9_800_000, 0)
    (escrow,) = await chain.backend.accounts([chain.platform.escrow])
    assert escrow is not None
    assert (await reconciled(runtime)).ok

    clock.set(QUARTER_END)
    await send_reading(client, full_seller, meters[full_seller.id], QUARTER_END, produced=15)
    await send_reading(client, short_seller, meters[short_seller.id], QUARTER_END, produced=7.5)
    await send_reading(client, buyer, meters[buyer.id], QUARTER_END, consumed=15)
    await send_reading(client, idle_buyer, meters[idle_buyer.id], QUARTER_END, consumed=3)
    assert await deliver_due(runtime) == 1
    assert await settle_due(runtime) == 1
    await mirrored(runtime)

    result = await reconciled(runtime)
    assert result.ok, result.mismatches
    assert result.accounts >= 7
    # The lanes' energy pools pass on all they were minted.
    pools = await chain.backend.accounts(list(chain.platform.energy_pools))
    assert {token_amount(p.data if p else None) for p in pools} == {0}
    # The short seller owes 0.302 on the ledger and holds nothing on chain.
    assert await tokens(runtime, short_seller.id) == (0, 0)
    assert (await tokens(runtime, investor.id))[0] > 0
    # Delivered energy: the full seller's 1,000 Wh and the short seller's 500 Wh, each minted
    # to its seller and moved on to a buyer in the settlement transaction.
    assert (await tokens(runtime, buyer.id))[1] + (await tokens(runtime, idle_buyer.id))[1] == 1500
    assert (await tokens(runtime, full_seller.id))[1] == 0
    energy = [(await tokens(runtime, b.id))[1] for b in (buyer, idle_buyer)]
    for account, wh in zip((buyer, idle_buyer), energy, strict=True):
        shown = (await client.get(f"{API}/wallet", headers=account.headers)).json()
        assert shown["energy_tokens_kwh"] == wh / 1000
        assert shown["chain_address"]

    rows = await _all_confirmed(runtime)
    settlement = [r for r in rows if r.kind == "settlement"]
    assert settlement
    _assert_lanes_share_no_writable_account(chain, settlement)
    async with runtime.db.sessionmaker() as session:
        epoch = await session.scalar(select(Epoch).where(Epoch.start == NEXT))
    assert epoch is not None
    assert all(
        r.memo == f"gridex:epoch={utc_iso(NEXT)}:trades={epoch.trades_hash}" for r in settlement
    )
    assert epoch.chain_signature == settlement[0].signature

    # Repaying the debt: only what takes the balance above zero is minted.
    await fund(runtime, short_seller.id, 500_000)
    await mirrored(runtime)
    assert await tokens(runtime, short_seller.id) == (198_000, 0)

    # A withdrawal: held (nothing on chain), then paid out (burned).
    request = await client.post(
        f"{API}/wallet/withdrawals",
        json={"amount": "4", "destination": "IBAN DE89 3704"},
        headers=buyer.headers,
    )
    assert request.status_code == 201, request.text
    await mirrored(runtime)
    assert (await tokens(runtime, buyer.id))[0] == 9_800_000
    approved = await client.post(
        f"{API}/admin/withdrawals/{request.json()['id']}/approve", headers=operator.headers
    )
    assert approved.status_code == 200, approved.text
    await mirrored(runtime)
    assert (await tokens(runtime, buyer.id))[0] == 5_800_000
    assert (await reconciled(runtime)).ok

    # A restart reads the snapshot: every balance and signature is still there.
    before = [await tokens(runtime, a.id) for a in (buyer, short_seller, investor)]
    await restart(runtime)
    assert [await tokens(runtime, a.id) for a in (buyer, short_seller, investor)] == before
    assert (await reconciled(runtime)).ok
    clock.advance(timedelta(minutes=1))
    await mirrored(runtime)  # nothing new: nothing sent again
    # The repayment (a mint) and the payout (a burn) since.
    assert len(await _all_confirmed(runtime)) == len(rows) + 2


async def test_resettlement_moves_the_energy_difference_on_chain(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    seller_meter = await meter_of(client, seller, "production")
    buyer_meter = await meter_of(client, buyer, "consumption")
    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1

    # One-minute readings covering the epoch: the seller delivered 500 of the 1,000 Wh sold.
    epoch_end = NEXT + timedelta(minutes=1)
    clock.set(epoch_end)
    await send_reading(client, seller, seller_meter, epoch_end, produced=0.5, minutes=1)
    await send_reading(client, buyer, buyer_meter, epoch_end, consumed=1, minutes=1)
    assert await deliver_due(runtime) == 1
    assert await settle_due(runtime) == 1
    await mirrored(runtime)
    assert (await tokens(runtime, buyer.id))[1] == 500
    settled = len(await _all_confirmed(runtime))

    async def correct(produced_kwh: float, minute: int) -> None:
        clock.set(NEXT + timedelta(minutes=minute))
        corrected = await client.put(
            f"{API}/meters/{seller_meter['id']}/readings/{utc_iso(epoch_end)}",
            json={
                "energy_consumed_kwh": 0,
                "energy_produced_kwh": produced_kwh,
                "interval_minutes": 1,
                "reason": "register read on site",
            },
            headers=operator.headers,
        )
        assert corrected.status_code == 200, corrected.text
        assert await resettle_corrections(runtime) == 1
        await mirrored(runtime)

    # More was delivered than first read: the 300 Wh more are minted and moved to the buyer,
    # with the credit difference, in one transaction carrying the epoch's memo.
    await correct(0.8, 5)
    assert (await tokens(runtime, buyer.id))[1] == 800
    assert (await tokens(runtime, seller.id))[1] == 0
    rows = await _all_confirmed(runtime)
    (resettled,) = rows[settled:]
    assert resettled.kind == "settlement"
    assert resettled.memo is not None
    assert resettled.memo.startswith(f"gridex:epoch={utc_iso(NEXT)}:")
    assert (await reconciled(runtime)).ok

    # Less than that after all: the excess is burned from the buyer.
    await correct(0.3, 6)
    assert (await tokens(runtime, buyer.id))[1] == 300
    assert (await reconciled(runtime)).ok
    chain = chain_of(runtime)
    (mint,) = await chain.backend.accounts([chain.platform.energy_mint])
    assert mint is not None
    assert Mint.from_bytes(bytes(mint.data)).supply == 300

    # Handled once: nothing more to send.
    await mirrored(runtime)
    assert len(await _all_confirmed(runtime)) == settled + 2


def _writable(row: ChainTransaction) -> set[Pubkey]:
    return {m.pubkey for i in unpack(row.instructions) for m in i.accounts if m.is_writable}


def _assert_lanes_share_no_writable_account(
    chain: Chain, settlement: list[ChainTransaction]
) -> None:
    """A lane's transactions write only their lane's platform accounts and no mint; the
    energy mint is written by the transaction filling the pools, and only outside the lanes
    (a payout to a seller in debt, which burns what the debt swallows, is planned there)."""
    platform = chain.platform
    lanes = {
        k: {platform.escrows[k], platform.fee_accounts[k], platform.energy_pools[k]}
        for k in range(LANES)
    }
    everything = set().union(*lanes.values())
    in_lanes = [r for r in settlement if r.lane is not None]
    assert in_lanes
    for row in in_lanes:
        writable = _writable(row)
        assert writable & everything <= lanes[row.lane]
        assert platform.energy_mint not in writable
        assert platform.credit_mint not in writable
        assert platform.authority not in writable  # it signs (memo, authority), pays nothing
    minting = [r for r in settlement if platform.energy_mint in _writable(r)]
    assert all(r.lane is None for r in minting)
    pools = set(platform.energy_pools)
    assert len([r for r in minting if _writable(r) & pools]) == 1
