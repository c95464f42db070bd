"""The mirror's own encoding of the hot token instructions is byte for byte what the SPL
builders of solana-py produce, and the planner nets, pairs and sizes transactions right."""

from __future__ import annotations

import uuid

from solders.pubkey import Pubkey
from spl.token import instructions as spl
from spl.token import models as params
from spl.token.constants import TOKEN_PROGRAM_ID

from gridex.chain.mirror import (
    ESCROW,
    FEES,
    MAX_TX_BYTES,
    Delivery,
    JournalItem,
    Planner,
    lane_holder,
    platform_lane,
    split,
)
from gridex.chain.tokens import LANES, Platform, lane_of


def test_token_instructions_match_the_spl_builders() -> None:
    platform = Platform.of(Pubkey.new_unique())
    a, b = Pubkey.new_unique(), Pubkey.new_unique()
    authority = platform.authority
    assert platform.transfer_credit(a, b, 1_234) == spl.transfer_checked(
        params.TransferCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            source=a,
            mint=platform.credit_mint,
            dest=b,
            owner=authority,
            amount=1_234,
            decimals=6,
        )
    )
    assert platform.mint_energy(a, 750) == spl.mint_to_checked(
        params.MintToCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            mint=platform.energy_mint,
            dest=a,
            mint_authority=authority,
            amount=750,
            decimals=3,
        )
    )
    assert platform.burn_credit(a, 2**40) == spl.burn_checked(
        params.BurnCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            mint=platform.credit_mint,
            account=a,
            owner=authority,
            amount=2**40,
            decimals=6,
        )
    )
    assert platform.credit_account(a) == spl.get_associated_token_address(a, platform.credit_mint)


def test_split_pairs_decreases_with_increases_then_mints_and_burns() -> None:
    transfers, mints, burns = split({"a": -5, "b": 3, "c": 4, "d": -1, "e": -3})
    assert transfers == [("a", "b", 3), ("a", "c", 2), ("d", "c", 1), ("e", "c", 1)]
    assert (mints, burns) == ([], [("e", 2)])
    assert split({"a": 5}) == ([], [("a", 5)], [])
    assert split({"a": -2, "b": 0}) == ([], [], [("a", 2)])


def test_planner_clamps_debts_and_keeps_transactions_under_the_size_limit() -> None:
    user = str(uuid.uuid4())
    planner = Planner({user: 100})
    # A charge of 300 against 100: only 100 can be burned; the debt of 200 shows as zero.
    planner.add(JournalItem(uuid.uuid4(), "settlement_charge", {user: -300}))
    # A top-up of 250 repays the debt and mints the 50 above zero.
    planner.add(JournalItem(uuid.uuid4(), "topup", {user: 250}))
    assert [dict(p.credits) for p in planner.result()] == [{user: -100 + 50}]
    assert planner.balances[user] == 50

    epoch = uuid.uuid4()
    many = Planner({ESCROW: 10**9})
    for _ in range(200):
        seller, buyer = str(uuid.uuid4()), str(uuid.uuid4())
        many.add(
            JournalItem(
                uuid.uuid4(),
                "settlement_payout",
                {ESCROW: -1_000, seller: 990, FEES: 10},
                epoch,
                (Delivery(uuid.uuid4(), seller, buyer, 500),),
            )
        )
    plans = many.result()
    assert len(plans) > 20
    assert all(p.estimated_bytes(100) <= MAX_TX_BYTES for p in plans)
    assert sum(sum(p.energy.values()) for p in plans) == 200 * 500


def test_payouts_are_planned_per_lane_with_the_energy_minted_ahead() -> None:
    epoch = uuid.uuid4()
    escrow = {lane_holder(ESCROW, k): 10**9 for k in range(LANES)}
    planner = Planner(dict(escrow))
    for _ in range(300):
        seller, buyer = str(uuid.uuid4()), str(uuid.uuid4())
        lane = lane_of(buyer)
        planner.add(
            JournalItem(
                uuid.uuid4(),
                "settlement_payout",
                {lane_holder(ESCROW, lane): -1_000, seller: 990, lane_holder(FEES, lane): 10},
                epoch,
                (Delivery(uuid.uuid4(), seller, buyer, 400),),
                lane,
            )
        )
    plans = planner.result()
    # First the pools' energy, then every lane's plans, each within its lane and size.
    assert plans[0].lane is None
    assert sum(plans[0].pools.values()) == 300 * 400
    lanes = plans[1:]
    assert {p.lane for p in lanes} == set(range(LANES))
    for plan in lanes:
        assert plan.estimated_bytes(100) <= MAX_TX_BYTES
        platform = {h for h in plan.credits if platform_lane(h) is not None}
        assert platform <= {lane_holder(ESCROW, plan.lane), lane_holder(FEES, plan.lane)}
        assert all(lane_of(buyer) == plan.lane for _, buyer in plan.energy)
    assert sum(sum(p.energy.values()) for p in lanes) == 300 * 400
    assert planner.balances[lane_holder(FEES, 0)] > 0
