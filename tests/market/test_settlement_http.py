"""Settlement end to end over HTTP with one-minute epochs: orders, clearing, readings, the
delivered transition, settlement by the job and by the endpoint, exact money, re-settlement."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.market.jobs import deliver_due, resettle_corrections, settle_due
from tests.factories import API, Account, make_user, signed_in
from tests.ledger.helpers import verify
from tests.market.helpers import (
    MARKET_SETTINGS,
    NEXT,
    close_and_clear,
    place,
    start_clock,
    trader,
    trial_total,
    wallet,
)
from tests.market.test_events import next_message, nothing_within
from tests.meters.helpers import make_meter, reading

# A 15-minute meter interval holds the one-minute epoch NEXT (12:01-12:02) as 1/15 of it.
QUARTER_END = NEXT - timedelta(minutes=1) + timedelta(minutes=15)  # 12:15


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # Tokens outlive the jumps of the clock to the end of a meter interval and the grace period.
    return {**MARKET_SETTINGS, "access_token_minutes": 60}


async def meter_of(client: httpx.AsyncClient, account: Account, kind: str) -> dict[str, Any]:
    """A meter large enough for a 15-minute reading that puts whole kWh into one minute."""
    return await make_meter(client, account, kind=kind, region="north", capacity_kw=100)


async def send_reading(
    client: httpx.AsyncClient,
    account: Account,
    meter: dict[str, Any],
    end: datetime,
    *,
    consumed: float = 0.0,
    produced: float = 0.0,
    minutes: int = 15,
) -> None:
    body = reading(end, consumed, produced, interval_minutes=minutes)
    response = await client.post(
        f"{API}/meters/{meter['id']}/readings", json=body, headers=account.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.text


async def get_epoch(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    response = await client.get(f"{API}/market/epochs/{utc_iso(NEXT)}", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def settle(client: httpx.AsyncClient, operator: Account, expect: int = 200) -> dict[str, Any]:
    response = await client.post(
        f"{API}/market/epochs/{utc_iso(NEXT)}/settle", headers=operator.headers
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


async def platform_balance(runtime: Runtime, account: ledger.AccountRef) -> int:
    async with runtime.db.sessionmaker() as session:
        return await ledger.balance_of(session, account)


async def trades_of(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    response = await client.get(
        f"{API}/market/trades", params={"epoch": utc_iso(NEXT)}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_jobs_deliver_and_settle_with_fee_shortfall_and_credit(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    full_seller = await trader(client, runtime, kind=None, funds="0")
    short_seller = await trader(client, runtime, kind=None, funds="0")
    full_buyer = await trader(client, runtime, kind=None)
    idle_buyer = await trader(client, runtime, kind=None)
    meters = {
        a.id: await meter_of(client, a, k)
        for a, k in (
            (full_seller, "production"),
            (short_seller, "bidirectional"),
            (full_buyer, "consumption"),
            (idle_buyer, "consumption"),
        )
    }
    for seller in (full_seller, short_seller):
        await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    for buyer in (full_buyer, idle_buyer):
        await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")

    # Before clearing, the endpoint refuses: the epoch is not delivered.
    early = await settle(client, operator, expect=409)
    assert early["error"]["code"] == "CONFLICT"
    assert early["error"]["details"]["state"] == "open"

    assert await close_and_clear(clock, runtime, NEXT) == 1
    cleared = await get_epoch(client, operator)
    assert cleared["state"] == "cleared"
    assert cleared["clearing"]["price"] == "0.200000"  # midpoint of 0.10 and 0.30
    assert cleared["settlement"] is None
    assert await wallet(runtime, full_buyer) == (9_800_000, 0, 200_000)

    # The interval is over but no readings yet, and the grace period (900 s) has not passed.
    clock.set(NEXT + timedelta(minutes=2))
    assert await deliver_due(runtime) == 0
    not_yet = await settle(client, operator, expect=409)
    assert not_yet["error"]["details"]["state"] == "cleared"
    assert not_yet["error"]["details"]["grace_until"] == utc_iso(
        NEXT + timedelta(minutes=1, seconds=900)
    )
    assert await settle_due(runtime) == 0

    # 15-minute readings ending 12:15: one fifteenth of each falls in the epoch 12:01-12:02.
    clock.set(QUARTER_END)
    await send_reading(client, full_seller, meters[full_seller.id], QUARTER_END, produced=15)
    await send_reading(client, short_seller, meters[short_seller.id], QUARTER_END, produced=7.5)
    await send_reading(client, full_buyer, meters[full_buyer.id], QUARTER_END, consumed=15)
    assert await deliver_due(runtime) == 0  # one participant's meter has not reported yet
    await send_reading(client, idle_buyer, meters[idle_buyer.id], QUARTER_END, consumed=3)
    assert await deliver_due(runtime) == 1
    assert (await get_epoch(client, operator))["state"] == "delivered"
    assert await deliver_due(runtime) == 0

    assert await settle_due(runtime) == 1
    assert await settle_due(runtime) == 0
    # Value 0.2 per trade, fee 1 % = 0.002: each seller is paid 0.198.
    # The short seller exported 500 of 1,000 Wh: 0.5 kWh x 1.00 (grid import) = 0.5 charged.
    assert await wallet(runtime, full_seller) == (198_000, 0, 0)
    assert await wallet(runtime, short_seller) == (198_000 - 500_000, 0, 0)
    # The idle buyer consumed 200 of 1,000 Wh: 0.8 kWh x 0.01 (feed-in) = 0.008 credited.
    assert await wallet(runtime, full_buyer) == (9_800_000, 0, 0)
    assert await wallet(runtime, idle_buyer) == (9_808_000, 0, 0)
    assert await platform_balance(runtime, ledger.ESCROW) == 0
    assert await platform_balance(runtime, ledger.FEES) == 4_000
    assert await platform_balance(runtime, ledger.GRID) == 500_000 - 8_000
    assert await trial_total(client, runtime) == "0.000000"

    settled = await get_epoch(client, operator)
    assert settled["state"] == "settled"
    assert settled["clearing"]["trades"] == 2
    assert settled["settlement"] == {
        "settled_at": utc_iso(QUARTER_END),
        "paid_to_sellers": "0.396000",
        "fees": "0.004000",
        "revenue_shared": "0.000000",
        "shortfall_charges": "0.500000",
        "credits": "0.008000",
        "grid_import_price": "1.000000",
        "feed_in_price": "0.010000",
        "adjustments": 0,
        "adjusted_at": None,
    }
    for account in (full_seller, short_seller, full_buyer, idle_buyer):
        assert [t["settlement_status"] for t in await trades_of(client, account)] == ["settled"]

    history = await client.get(f"{API}/wallet/transactions", headers=short_seller.headers)
    assert history.status_code == 200, history.text
    assert sorted(
        (t["type"], t["amount"], t["reference_type"]) for t in history.json()["items"]
    ) == [("settlement_charge", "-0.500000", "epoch"), ("settlement_payout", "0.198000", "trade")]

    # The debt blocks new buying.
    blocked = await place(
        client, short_seller, expect=409, side="buy", quantity_kwh=1, limit_price="0.5"
    )
    assert blocked["error"]["code"] == "INSUFFICIENT_FUNDS"

    # The endpoint on a settled epoch answers the same record and moves nothing.
    again = await settle(client, operator)
    assert again["settlement"] == settled["settlement"]
    assert await wallet(runtime, short_seller) == (-302_000, 0, 0)
    assert await trial_total(client, runtime) == "0.000000"

    # Participants only may not settle.
    refused = await client.post(
        f"{API}/market/epochs/{utc_iso(NEXT)}/settle", headers=full_buyer.headers
    )
    assert refused.status_code == 403


async def test_endpoint_settles_after_grace_and_splits_revenue_shares(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    investor = await make_user(runtime, role=Role.investor)
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    shared = await meter_of(client, seller, "production")
    own = await meter_of(client, seller, "production")
    buyer_meter = await meter_of(client, buyer, "consumption")
    installation = await client.post(
        f"{API}/installations",
        json={
            "meter_id": shared["id"],
            "shares": [
                {"user_id": str(seller.id), "percent": 45},
                {"user_id": str(investor.id), "percent": 35},
            ],
            "platform_percent": 20,
        },
        headers=operator.headers,
    )
    assert installation.status_code == 201, installation.text

    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1

    clock.set(QUARTER_END)
    # The shared meter exported 600 Wh in the epoch, the seller's own meter 400 Wh.
    await send_reading(client, seller, shared, QUARTER_END, produced=9)
    await send_reading(client, seller, own, QUARTER_END, produced=6)
    # The buyer's meter never reports: after the grace period the epoch is delivered anyway.
    assert (await settle(client, operator, expect=409))["error"]["details"]["state"] == "cleared"
    clock.set(NEXT + timedelta(minutes=1, seconds=900))
    out = await settle(client, operator)
    assert out["state"] == "settled"
    assert out["settlement"]["paid_to_sellers"] == "0.198000"
    # 60 % of 0.198 = 0.1188 is the shared meter's revenue: 45 / 35 / 20 of it.
    assert out["settlement"]["revenue_shared"] == "0.118800"
    assert out["settlement"]["credits"] == "0.010000"  # 1 kWh unconsumed x 0.01

    assert await wallet(runtime, seller) == (198_000 - 118_800 + 53_460, 0, 0)
    assert await wallet(runtime, investor) == (41_580, 0, 0)
    assert await platform_balance(runtime, ledger.FEES) == 2_000 + 23_760
    assert await wallet(runtime, buyer) == (9_800_000 + 10_000, 0, 0)
    assert await platform_balance(runtime, ledger.ESCROW) == 0
    assert await trial_total(client, runtime) == "0.000000"
    assert buyer_meter["id"]

    # Idempotent: the job and the endpoint find nothing more to do.
    assert await settle_due(runtime) == 0
    assert (await settle(client, operator))["settlement"] == out["settlement"]
    assert await wallet(runtime, investor) == (41_580, 0, 0)


async def test_correction_after_settlement_resettles_the_difference_once(
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

    # One-minute readings: the seller's covers the epoch exactly, 500 of 1,000 Wh sold.
    clock.set(NEXT + timedelta(minutes=1))
    epoch_end = NEXT + timedelta(minutes=1)
    await send_reading(client, seller, seller_meter, epoch_end, produced=0.5, minutes=1)
    await send_reading(client, buyer, buyer_meter, epoch_end, consumed=1, minutes=1)
    assert await deliver_due(runtime) == 1
    assert await settle_due(runtime) == 1
    assert await wallet(runtime, seller) == (198_000 - 500_000, 0, 0)

    # Staff correct the seller's reading: 800 Wh were exported, so only 200 Wh were short.
    clock.set(NEXT + timedelta(minutes=5))
    corrected = await client.put(
        f"{API}/meters/{seller_meter['id']}/readings/{utc_iso(epoch_end)}",
        json={
            "energy_consumed_kwh": 0,
            "energy_produced_kwh": 0.8,
            "interval_minutes": 1,
            "reason": "register read on site",
        },
        headers=operator.headers,
    )
    assert corrected.status_code == 200, corrected.text
    assert await resettle_corrections(runtime) == 1
    assert await wallet(runtime, seller) == (198_000 - 200_000, 0, 0)
    assert await platform_balance(runtime, ledger.GRID) == 200_000
    # Handled once: running the job again finds nothing and moves nothing.
    assert await resettle_corrections(runtime) == 0
    assert await wallet(runtime, seller) == (-2_000, 0, 0)
    assert await trial_total(client, runtime) == "0.000000"
    assert (await verify(runtime)).ok

    epoch = await get_epoch(client, operator)
    assert epoch["settlement"]["shortfall_charges"] == "0.200000"
    assert epoch["settlement"]["adjustments"] == 1
    assert epoch["settlement"]["adjusted_at"] == utc_iso(NEXT + timedelta(minutes=5))
    history = await client.get(
        f"{API}/wallet/transactions", params={"type": "adjustment"}, headers=seller.headers
    )
    assert history.status_code == 200, history.text
    assert [(t["amount"], t["reference_type"]) for t in history.json()["items"]] == [
        ("0.300000", "epoch")
    ]

    # A correction that changes nothing of the delivery check is handled without money.
    unchanged = await client.put(
        f"{API}/meters/{buyer_meter['id']}/readings/{utc_iso(epoch_end)}",
        json={
            "energy_consumed_kwh": 1.2,
            "energy_produced_kwh": 0,
            "interval_minutes": 1,
            "reason": "rounding fixed",
        },
        headers=operator.headers,
    )
    assert unchanged.status_code == 200, unchanged.text
    assert await resettle_corrections(runtime) == 1
    assert await wallet(runtime, buyer) == (9_800_000, 0, 0)
    assert (await get_epoch(client, operator))["settlement"]["adjustments"] == 1


async def test_correction_waits_until_its_epoch_is_settled(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    seller_meter = await meter_of(client, seller, "production")
    await meter_of(client, buyer, "consumption")
    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1

    epoch_end = NEXT + timedelta(minutes=1)
    clock.set(epoch_end)
    await send_reading(client, seller, seller_meter, epoch_end, produced=0.25, minutes=1)
    corrected = await client.put(
        f"{API}/meters/{seller_meter['id']}/readings/{utc_iso(epoch_end)}",
        json={
            "energy_consumed_kwh": 0,
            "energy_produced_kwh": 1,
            "interval_minutes": 1,
            "reason": "late register read",
        },
        headers=operator.headers,
    )
    assert corrected.status_code == 200, corrected.text
    # The epoch is not settled yet: the correction waits, and settlement reads the new value.
    assert await resettle_corrections(runtime) == 0
    clock.set(epoch_end + timedelta(seconds=900))
    assert await deliver_due(runtime) == 1  # the buyer's meter never reported: grace
    assert await settle_due(runtime) == 1
    assert await wallet(runtime, seller) == (198_000, 0, 0)
    assert await wallet(runtime, buyer) == (9_800_000 + 10_000, 0, 0)
    assert await resettle_corrections(runtime) == 1
    assert await wallet(runtime, seller) == (198_000, 0, 0)
    assert (await get_epoch(client, operator))["settlement"]["adjustments"] == 0
    assert await trial_total(client, runtime) == "0.000000"


async def test_two_workers_settle_once_and_events_follow_the_commit(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    seller = await trader(client, runtime, kind=None, funds="0")
    buyer = await trader(client, runtime, kind=None)
    seller_meter = await meter_of(client, seller, "production")
    buyer_meter = await meter_of(client, buyer, "consumption")
    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.10")
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.30")
    assert await close_and_clear(clock, runtime, NEXT) == 1
    epoch_end = NEXT + timedelta(minutes=1)
    clock.set(epoch_end)
    await send_reading(client, seller, seller_meter, epoch_end, produced=1, minutes=1)
    await send_reading(client, buyer, buyer_meter, epoch_end, consumed=0.75, minutes=1)
    assert await deliver_due(runtime) == 1

    pubsub = runtime.pubsub
    async with (
        pubsub.subscribe(f"user:{buyer.id}") as mine,
        pubsub.subscribe("market", f"epoch:{utc_iso(NEXT)}") as public,
    ):
        # Two workers race for the same delivered epoch: the claim lets exactly one settle.
        results = await asyncio.gather(settle_due(runtime), settle_due(runtime))
        assert sorted(results) == [0, 1]
        await pubsub.flush()
        seen = [await next_message(public) for _ in range(2)]
        assert sorted(m["channel"] for m in seen) == ["epoch:" + utc_iso(NEXT), "market"]
        assert {m["type"] for m in seen} == {"settlement_completed"}
        assert seen[0]["data"]["state"] == "settled"
        assert seen[0]["data"]["settlement"]["credits"] == "0.002500"  # 250 Wh x 0.01
        own = await next_message(mine)
        assert own["type"] == "settlement_completed"
        assert own["data"] == {
            "region": "north",
            "epoch": utc_iso(NEXT),
            "adjustment": False,
            "sold_kwh": 0.0,
            "bought_kwh": 1.0,
            "exported_kwh": 0.0,
            "imported_kwh": 0.75,
            "received": "0.000000",
            "fees": "0.000000",
            "charged": "0.000000",
            "credited": "0.002500",
        }
        assert await nothing_within(public)
    assert await wallet(runtime, seller) == (198_000, 0, 0)
    assert await wallet(runtime, buyer) == (9_800_000 + 2_500, 0, 0)
    assert await trial_total(client, runtime) == "0.000000"


async def test_settle_refuses_an_epoch_that_never_traded_before_clearing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    clock.set(NEXT + timedelta(minutes=3))
    # No row exists for the epoch (nobody traded, no job ran): it is closed, not delivered.
    refused = await settle(client, operator, expect=409)
    assert refused["error"]["code"] == "CONFLICT"
    assert refused["error"]["details"] == {"state": "closed"}
    misaligned = await client.post(
        f"{API}/market/epochs/{utc_iso(NEXT + timedelta(seconds=30))}/settle",
        headers=operator.headers,
    )
    assert misaligned.status_code == 422
    # Once cleared (empty), it is delivered at its end and settles with zero totals.
    operator_clear = await client.post(
        f"{API}/market/epochs/{utc_iso(NEXT)}/clear", headers=operator.headers
    )
    assert operator_clear.status_code == 200, operator_clear.text
    assert operator_clear.json()["state"] == "cleared"
    out = await settle(client, operator)
    assert out["state"] == "settled"
    assert out["settlement"]["paid_to_sellers"] == "0.000000"
    assert out["settlement"]["adjustments"] == 0
