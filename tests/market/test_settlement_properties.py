"""Settlement keeps the books for any trades and readings: the pure rules conserve energy and
money, and a settled epoch changes the balances of all accounts by zero in sum, drains its
escrow and pays every trade's value out exactly once."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.models import Installation, InstallationShare, LedgerAccount
from gridex.market.jobs import clear_due, deliver_due, settle_due
from gridex.market.models import Epoch, EpochState, Trade
from gridex.market.settlement.rules import Interval, metered_energy, plan_payout
from gridex.meters.models import MeterReading
from tests.factories import new_region, signed_in
from tests.ledger.helpers import fund, verify
from tests.market.helpers import MARKET_SETTINGS, place
from tests.meters.helpers import make_meter

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {**MARKET_SETTINGS, "access_token_minutes": 60 * 24 * 30}


# --- pure rules -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.sampled_from([1, 3, 5, 15]),
    offset=st.integers(min_value=0, max_value=14),
    energy=st.integers(min_value=0, max_value=10**7),
)
def test_pro_rating_over_consecutive_epochs_adds_up_to_the_reading(
    minutes: int, offset: int, energy: int
) -> None:
    meter, owner = uuid.uuid4(), uuid.uuid4()
    end = T0 + timedelta(minutes=offset)
    reading = Interval(meter, end, minutes, energy, energy)
    parts = [
        metered_energy(
            [reading], {meter: owner}, T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1)
        )
        for i in range(-20, 20)
    ]
    assert sum((p[owner].exported for p in parts if owner in p), Fraction(0)) == energy
    assert sum((p[owner].imported for p in parts if owner in p), Fraction(0)) == energy


SHARES = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    value=st.integers(min_value=0, max_value=10**9),
    fee_bps=st.integers(min_value=0, max_value=10_000),
    exports=st.lists(st.integers(min_value=0, max_value=10**6), min_size=0, max_size=4),
    shared=st.lists(st.booleans(), min_size=4, max_size=4),
    cuts=SHARES,
)
def test_a_payout_splits_the_whole_trade_value(
    value: int, fee_bps: int, exports: list[int], shared: list[bool], cuts: list[int]
) -> None:
    fee = value * fee_bps // 10_000
    meters = [uuid.uuid4() for _ in exports]
    holders = [uuid.uuid4() for _ in cuts]
    scale = max(1, sum(cuts))
    bps = [c * 10_000 // scale for c in cuts]
    shares = {
        m: ([*zip(holders, bps, strict=True)], 10_000 - sum(bps))
        for m, s in zip(meters, shared, strict=False)
        if s
    }
    payout = plan_payout(
        value_micros=value,
        fee_micros=fee,
        exported_by_meter={m: Fraction(e, 7) for m, e in zip(meters, exports, strict=True)},
        shares=shares,
    )
    assert payout.seller_micros >= 0
    assert all(part >= 0 for part in payout.holders.values())
    assert payout.fee_micros + payout.seller_micros + payout.shared_micros == value


# --- a settled epoch keeps the books ----------------------------------------------------------

ORDER = st.tuples(
    st.integers(min_value=1, max_value=3000),  # Wh
    st.integers(min_value=10, max_value=100),  # price in cents per kWh
)
PARTICIPANT = st.tuples(
    st.lists(ORDER, min_size=1, max_size=2),
    st.sampled_from([1, 5, 15]),  # meter interval
    st.integers(min_value=0, max_value=60_000),  # Wh of the reading covering the epoch
    st.booleans(),  # reports at all
)
_examples = itertools.count()


async def _balances(rt: Runtime) -> dict[uuid.UUID, int]:
    async with rt.db.sessionmaker() as session:
        rows = await session.execute(select(LedgerAccount.id, LedgerAccount.balance_micros))
        return {account: balance for account, balance in rows}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sellers=st.lists(PARTICIPANT, min_size=1, max_size=3),
    buyers=st.lists(PARTICIPANT, min_size=1, max_size=3),
    share_bp=st.integers(min_value=0, max_value=10_000),
)
async def test_settlement_conserves_money_and_drains_escrow(
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    sellers: list[tuple[list[tuple[int, int]], int, int, bool]],
    buyers: list[tuple[list[tuple[int, int]], int, int, bool]],
    share_bp: int,
) -> None:
    # Every example trades in its own region and hour: the database is shared between examples.
    now = T0 + timedelta(hours=next(_examples))
    clock.set(now)
    region = await new_region(runtime)
    epoch_start = now + timedelta(minutes=1)
    investor = await signed_in(client, runtime, Role.investor, region=region)
    readings = []
    installations = []
    for side, people in (("sell", sellers), ("buy", buyers)):
        for orders, minutes, wh, reports in people:
            account = await signed_in(client, runtime, region=region)
            kind = "production" if side == "sell" else "consumption"
            meter = await make_meter(client, account, kind=kind, region=region, capacity_kw=1000)
            if side == "buy":
                await fund(runtime, account.id, 10_000_000)
            elif share_bp:
                installations.append(uuid.UUID(meter["id"]))
            for quantity, cents in orders:
                await place(
                    client,
                    account,
                    side=side,
                    quantity_kwh=quantity / 1000,
                    limit_price=f"{cents / 100:.2f}",
                )
            if reports:
                end = epoch_start + timedelta(minutes=1)
                end += timedelta(minutes=(minutes - 1))  # ends after the epoch: pro-rated
                produced, consumed = (wh, 0) if side == "sell" else (0, wh)
                readings.append(
                    MeterReading(
                        meter_id=uuid.UUID(meter["id"]),
                        timestamp=end,
                        interval_minutes=minutes,
                        consumed_wh=consumed,
                        produced_wh=produced,
                        source="http",
                        received_at=now,
                        revision=0,
                    )
                )
    async with runtime.db.sessionmaker() as session:
        session.add_all(readings)
        for meter_id in installations:
            installation = Installation(
                meter_id=meter_id, platform_bp=10_000 - share_bp, created_at=now, updated_at=now
            )
            session.add(installation)
            await session.flush()
            session.add(
                InstallationShare(
                    installation_id=installation.id, user_id=investor.id, share_bp=share_bp
                )
            )
        await session.commit()

    clock.set(epoch_start - timedelta(seconds=5))
    await clear_due(runtime)
    before = await _balances(runtime)
    assert before.get(ledger.ESCROW.id, 0) == await _epoch_value(runtime, region)

    clock.set(epoch_start + timedelta(minutes=1, seconds=runtime.settings.settlement_grace_seconds))
    await deliver_due(runtime)
    assert await settle_due(runtime) >= 1
    after = await _balances(runtime)

    changes = {a: after.get(a, 0) - before.get(a, 0) for a in set(before) | set(after)}
    assert sum(changes.values()) == 0
    assert after[ledger.ESCROW.id] == 0
    assert sum(after.values()) == 0
    async with runtime.db.sessionmaker() as session:
        epoch = await session.scalar(
            select(Epoch).where(Epoch.region == region, Epoch.start == epoch_start)
        )
        pending = await session.scalar(
            select(func.count()).where(Trade.region == region, Trade.settlement_status != "settled")
        )
    assert epoch is not None
    assert epoch.state is EpochState.settled
    assert pending == 0
    # The grid's change is exactly the record's charges less its credits; fees hold at least
    # the trades' fees (plus the platform's revenue shares).
    charges, credits = epoch.settlement_charges_micros or 0, epoch.settlement_credits_micros or 0
    assert changes.get(ledger.GRID.id, 0) == charges - credits
    assert changes.get(ledger.FEES.id, 0) >= (epoch.settlement_fees_micros or 0)
    assert (await verify(runtime)).ok


async def _epoch_value(rt: Runtime, region: str) -> int:
    async with rt.db.sessionmaker() as session:
        value = await session.scalar(
            select(func.coalesce(func.sum(Trade.value_micros), 0)).where(Trade.region == region)
        )
    return int(value or 0)
