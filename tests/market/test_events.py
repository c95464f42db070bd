"""Market events on the internal pub/sub, published only after commit; memory and Redis."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import pytest

from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.pubsub import MemoryPubSub, RedisPubSub, Subscription, emit
from gridex.core.runtime import Runtime
from tests.market.helpers import MARKET_SETTINGS, NEXT, close_and_clear, place, start_clock, trader


@pytest.fixture(params=["memory", "redis"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    overrides = dict(MARKET_SETTINGS)
    if request.param == "redis":
        url = os.environ.get("GRIDEX_TEST_REDIS_URL")
        if not url:
            pytest.skip("GRIDEX_TEST_REDIS_URL is not set")
        overrides["redis_url"] = url
    return overrides


async def next_message(sub: Subscription, seconds: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        return await sub.get()


async def nothing_within(sub: Subscription, seconds: float = 0.3) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await sub.get()
    except TimeoutError:
        return True
    return False


async def test_order_and_clearing_events(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    seller = await trader(client, runtime, funds="0")
    buyer = await trader(client, runtime, funds="1")
    pubsub = runtime.pubsub
    assert pubsub.name == ("redis" if runtime.settings.redis_url else "memory")
    async with (
        pubsub.subscribe(f"user:{buyer.id}") as mine,
        pubsub.subscribe("market", f"epoch:{utc_iso(NEXT)}") as public,
    ):
        bid = await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.5")
        await pubsub.flush()
        placed = await next_message(mine)
        assert (placed["type"], placed["data"]["id"]) == ("order_placed", bid["id"])
        assert placed["channel"] == f"user:{buyer.id}"

        # A request that fails (insufficient funds) rolls back and publishes nothing.
        await place(client, buyer, expect=409, side="buy", quantity_kwh=10, limit_price="0.5")
        await pubsub.flush()
        assert await nothing_within(mine)

        await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.1")
        await close_and_clear(clock, runtime, NEXT)
        await pubsub.flush()
        # One trade and the clearing, each on both channels.
        seen = [await next_message(public) for _ in range(4)]
        assert sorted((m["type"], m["channel"]) for m in seen) == [
            ("epoch_cleared", f"epoch:{utc_iso(NEXT)}"),
            ("epoch_cleared", "market"),
            ("trade_executed", f"epoch:{utc_iso(NEXT)}"),
            ("trade_executed", "market"),
        ]
        trade = next(m for m in seen if m["type"] == "trade_executed")
        assert set(trade["data"]) == {
            "id",
            "region",
            "epoch",
            "quantity_kwh",
            "price",
            "executed_at",
        }
        cleared = next(m for m in seen if m["type"] == "epoch_cleared")
        assert cleared["data"]["clearing"]["price"] == "0.300000"
        own = [await next_message(mine) for _ in range(2)]
        assert sorted(m["type"] for m in own) == ["order_updated", "trade_executed"]
        updated = next(m for m in own if m["type"] == "order_updated")
        assert updated["data"]["status"] == "filled"


async def test_emit_publishes_only_after_commit(runtime: Runtime) -> None:
    pubsub = runtime.pubsub
    at = runtime.clock.now()
    async with pubsub.subscribe("test") as sub:
        async with runtime.db.sessionmaker() as session:
            emit(session, pubsub, ["test"], "rolled_back", {}, at)
            await session.rollback()
        async with runtime.db.sessionmaker() as session:
            emit(session, pubsub, ["test"], "committed", {"n": 1}, at)
            await pubsub.flush()
            assert await nothing_within(sub, 0.2)
            await session.commit()
        await pubsub.flush()
        message = await next_message(sub)
        assert (message["type"], message["data"]) == ("committed", {"n": 1})
        assert message["ts"].endswith("Z")
        assert await nothing_within(sub, 0.2)


async def test_memory_fan_out_and_unsubscribe() -> None:
    hub = MemoryPubSub()
    one, two = hub.subscribe("a"), hub.subscribe("a", "b")
    await hub.publish("a", {"type": "x"})
    assert (await one.get())["type"] == "x"
    assert (await two.get())["channel"] == "a"
    await one.close()
    await hub.publish("a", {"type": "y"})
    assert one.queue.empty()
    assert (await two.get())["type"] == "y"


async def test_redis_backend_between_two_clients() -> None:
    url = os.environ.get("GRIDEX_TEST_REDIS_URL")
    if not url:
        pytest.skip("GRIDEX_TEST_REDIS_URL is not set")
    publisher, subscriber = RedisPubSub(url), RedisPubSub(url)
    try:
        async with subscriber.subscribe("market") as sub:
            await publisher.publish("market", {"type": "epoch_cleared", "data": {}, "ts": "t"})
            message = await next_message(sub)
            assert (message["type"], message["channel"]) == ("epoch_cleared", "market")
    finally:
        await publisher.close()
        await subscriber.close()
