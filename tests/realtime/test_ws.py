"""/ws through a real server and real clients: sign-in, channels and their permissions, events,
revoked sessions and a slow client that must not hold up the others."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import uuid

import httpx
import orjson
import pytest
from sqlalchemy import update
from websockets.asyncio.client import connect

from gridex.auth.models import AuthSession, Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.metrics import WS_DROPPED
from gridex.core.pubsub import message
from gridex.core.runtime import Runtime
from gridex.realtime.service import hub_of
from tests.factories import API, signed_in
from tests.market.helpers import MARKET_SETTINGS, NEXT, close_and_clear, place, start_clock, trader
from tests.meters.helpers import make_meter, reading
from tests.realtime.helpers import (
    close_code,
    receive,
    receive_until,
    serving,
    signed_in_socket,
    subscribe,
)


@pytest.fixture(params=["memory", "redis"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    """Every case with the in-process pub/sub and with Redis behind the hub."""
    overrides = {**MARKET_SETTINGS, "ws_send_queue": 16, "ws_auth_timeout_seconds": 2}
    if request.param == "redis":
        url = os.environ.get("GRIDEX_TEST_REDIS_URL")
        if not url:
            pytest.skip("GRIDEX_TEST_REDIS_URL is not set")
        overrides["redis_url"] = url
    return overrides


async def test_sign_in_by_query_or_first_message(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user = await signed_in(client, runtime)
    async with serving(runtime) as base:
        ws = await connect(f"{base}/ws?token={user.access_token}")
        welcome = await receive(ws)
        assert welcome["type"] == "welcome"
        assert welcome["data"] == {"user_id": str(user.id), "channels": ["user"]}
        await ws.send('{"op": "ping"}')
        assert (await receive(ws))["type"] == "pong"
        await ws.close()

        ws = await connect(f"{base}/ws")
        await ws.send(orjson.dumps({"op": "auth", "token": user.access_token}).decode())
        assert (await receive(ws))["type"] == "welcome"
        # A malformed message is answered, and the socket stays open.
        await ws.send("not json")
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["data"]["code"] == "VALIDATION_ERROR"
        await ws.send('{"op": "ping"}')
        assert (await receive(ws))["type"] == "pong"
        await ws.close()


async def test_bad_credentials_close_4401(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user = await signed_in(client, runtime)
    async with serving(runtime) as base:
        for url in (f"{base}/ws?token=not-a-jwt", f"{base}/ws?token={user.access_token}x"):
            async with connect(url) as ws:
                assert await close_code(ws) == 4401
        # First message must be auth.
        async with connect(f"{base}/ws") as ws:
            await ws.send('{"op": "subscribe", "channel": "market"}')
            assert await close_code(ws) == 4401
        async with connect(f"{base}/ws") as ws:
            await ws.send('{"op": "auth", "token": "nope"}')
            assert await close_code(ws) == 4401
        # Silence past the auth timeout.
        async with connect(f"{base}/ws") as ws:
            assert await close_code(ws) == 4401
        # A token whose session ended before connecting.
        response = await client.post(f"{API}/auth/logout", headers=user.headers)
        assert response.status_code in (200, 204), response.text
        async with connect(f"{base}/ws?token={user.access_token}") as ws:
            assert await close_code(ws) == 4401


async def test_revoked_session_closes_its_sockets_only(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user = await signed_in(client, runtime)
    other_session = await signed_in(client, runtime)  # another user, untouched
    async with serving(runtime) as base:
        first = await signed_in_socket(base, user.access_token)
        second = await signed_in_socket(base, user.access_token)
        bystander = await signed_in_socket(base, other_session.access_token)
        response = await client.post(f"{API}/auth/logout", headers=user.headers)
        assert response.status_code in (200, 204), response.text
        assert await close_code(first) == 4401
        assert await close_code(second) == 4401
        assert first.close_reason == "session revoked"
        await bystander.send('{"op": "ping"}')
        assert (await receive(bystander))["type"] == "pong"
        await bystander.close()


async def test_logout_all_keeps_no_socket_and_the_check_catches_silent_revocations(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user = await signed_in(client, runtime)
    async with serving(runtime) as base:
        ws = await signed_in_socket(base, user.access_token)
        response = await client.post(f"{API}/auth/logout-all", headers=user.headers)
        assert response.status_code in (200, 204), response.text
        assert await close_code(ws) == 4401

        # A revocation whose event was lost (written straight to the table): the periodic
        # session check closes the socket.
        fresh = await signed_in(client, runtime)
        ws = await signed_in_socket(base, fresh.access_token)
        async with runtime.db.sessionmaker() as session:
            await session.execute(
                update(AuthSession)
                .where(AuthSession.user_id == fresh.id)
                .values(revoked_at=runtime.clock.now(), revoked_reason="test")
            )
            await session.commit()
        assert await hub_of(runtime).check_sessions() == 1
        assert await close_code(ws) == 4401
        assert ws.close_reason == "session ended"


async def test_meter_channel_is_for_owner_and_region_staff(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = await signed_in(client, runtime, region="north")
    meter = await make_meter(client, owner, region="north")
    stranger = await signed_in(client, runtime)
    north_operator = await signed_in(client, runtime, Role.operator, region="north")
    south_operator = await signed_in(client, runtime, Role.operator, region="south")
    admin = await signed_in(client, runtime, Role.admin, region=None)
    channel = f"meter:{meter['id']}"
    async with serving(runtime) as base:
        for allowed in (owner, north_operator, admin):
            ws = await signed_in_socket(base, allowed.access_token)
            assert await subscribe(ws, channel) == {
                "type": "subscribed",
                "data": {"channel": channel},
                "ts": utc_iso(runtime.clock.now()),
            }
            await ws.close()
        for refused in (stranger, south_operator):
            ws = await signed_in_socket(base, refused.access_token)
            await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
            assert await close_code(ws) == 4403
        # An unknown meter is refused alike: a socket learns nothing of other people's meters.
        ws = await signed_in_socket(base, stranger.access_token)
        unknown = {"op": "subscribe", "channel": f"meter:{uuid.uuid4()}"}
        await ws.send(orjson.dumps(unknown).decode())
        assert await close_code(ws) == 4403
        # A malformed channel is an error message, not a close.
        ws = await signed_in_socket(base, stranger.access_token)
        for bad in ("meter:42", "epoch:yesterday", "epoch:2026-03-04T12:00:00", "orders", 7):
            await ws.send(orjson.dumps({"op": "subscribe", "channel": bad}).decode())
            assert (await receive(ws))["type"] == "error", bad
        await ws.close()


async def test_events_reach_market_epoch_user_and_meter_channels(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    seller = await trader(client, runtime, funds="0")
    buyer = await trader(client, runtime, funds="1")
    meter = await make_meter(client, seller)
    epoch = f"epoch:{utc_iso(NEXT)}"
    async with serving(runtime) as base:
        watcher = await signed_in_socket(base, seller.access_token)
        assert (await subscribe(watcher, "market"))["type"] == "subscribed"
        # The start in another spelling names the same epoch.
        other_spelling = NEXT.isoformat()
        assert (await subscribe(watcher, f"epoch:{other_spelling}"))["data"] == {"channel": epoch}
        assert (await subscribe(watcher, f"meter:{meter['id']}"))["type"] == "subscribed"
        mine = await signed_in_socket(base, buyer.access_token)

        bid = await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.5")
        placed = await receive_until(mine, lambda m: m["type"] == "order_placed")
        assert placed["channel"] == "user"
        assert placed["data"]["id"] == bid["id"]

        await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.1")
        await close_and_clear(clock, runtime, NEXT)
        await runtime.pubsub.flush()
        seen: dict[tuple[str, str], dict[str, object]] = {}
        while len(seen) < 4:
            got = await receive_until(
                watcher,
                lambda m: (
                    m["channel"] != "user" and m["type"] in ("trade_executed", "epoch_cleared")
                ),
            )
            seen[(got["type"], got["channel"])] = got["data"]
        assert set(seen) == {
            ("trade_executed", "market"),
            ("trade_executed", epoch),
            ("epoch_cleared", "market"),
            ("epoch_cleared", epoch),
        }
        assert seen[("trade_executed", "market")]["price"] == "0.300000"
        filled = await receive_until(
            mine, lambda m: m["type"] == "order_updated" and m["data"]["id"] == bid["id"]
        )
        assert filled["data"]["status"] == "filled"

        end = clock.now().replace(second=0, microsecond=0)
        response = await client.post(
            f"{API}/meters/{meter['id']}/readings",
            json={"readings": [reading(end, 0.1, 0.2)]},
            headers=seller.headers,
        )
        assert response.status_code in (200, 201), response.text
        assert response.json()["accepted"] == 1, response.text
        received = await receive_until(watcher, lambda m: m["type"] == "reading_received")
        assert received["channel"] == f"meter:{meter['id']}"
        assert received["data"] == {"meter_id": meter["id"], "timestamp": utc_iso(end)}

        # Unsubscribed: no more market events.
        await watcher.send('{"op": "unsubscribe", "channel": "market"}')
        assert (await receive_until(watcher, lambda m: m["type"] == "unsubscribed"))["data"] == {
            "channel": "market"
        }
        await runtime.pubsub.publish("market", message("probe", {}, clock.now()))
        await watcher.send('{"op": "ping"}')
        # The meter's channel may still speak (the reading brought it online: device_online);
        # the market's may not.
        before_pong = []
        while (got := await receive(watcher))["type"] != "pong":
            before_pong.append(got)
        assert [m for m in before_pong if m.get("channel") == "market"] == []
        await watcher.close()
        await mine.close()


async def test_a_slow_client_is_closed_and_the_others_get_everything(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    fast_user = await signed_in(client, runtime)
    slow_user = await signed_in(client, runtime)
    dropped_before = WS_DROPPED._value.get()
    # Incompressible (the sockets negotiate permessage-deflate): 200 x 67 kB.
    count, blob = 200, base64.b64encode(os.urandom(50_000)).decode()
    async with serving(runtime) as base:
        fast = await signed_in_socket(base, fast_user.access_token)
        # max_queue=1: the client library stops reading from the socket once one message
        # waits, and a small fixed receive buffer keeps the kernel from absorbing megabytes,
        # so the server's writes back up as they would for a stalled client far away.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        raw.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        slow = await connect(f"{base}/ws?token={slow_user.access_token}", max_queue=1, sock=raw)
        await subscribe(fast, "market")
        await slow.send('{"op": "subscribe", "channel": "market"}')
        await asyncio.sleep(0.2)

        got: list[int] = []
        progress = asyncio.Event()

        async def read_all() -> None:
            while len(got) < count:
                body = orjson.loads(await fast.recv())
                if body["type"] == "tick":
                    got.append(body["data"]["n"])
                    progress.set()

        reader = asyncio.create_task(read_all())
        for n in range(count):
            # Keep the fast client at most 8 messages behind (half its queue), whatever the
            # machine's speed: only the client that stopped reading may overflow.
            while n - len(got) >= 8:
                progress.clear()
                async with asyncio.timeout(30):
                    await progress.wait()
            blob_message = message("tick", {"n": n, "blob": blob}, clock.now())
            await runtime.pubsub.publish("market", blob_message)
        async with asyncio.timeout(60):
            await reader
        assert got == list(range(count))
        assert WS_DROPPED._value.get() > dropped_before
        # The slow client, reading at last, finds what was in flight and then the close code.
        assert await close_code(slow, seconds=60) == 4429
        await fast.send('{"op": "ping"}')
        assert (await receive(fast))["type"] == "pong"
        await fast.close()


async def test_wallet_and_meter_status_changes_reach_the_sockets(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime, region="north")
    operator = await signed_in(client, runtime, Role.operator, region="north")
    meter = await make_meter(client, alice, region="north")
    async with serving(runtime) as base:
        ws = await signed_in_socket(base, alice.access_token)
        await subscribe(ws, f"meter:{meter['id']}")

        intent = await client.post(
            f"{API}/wallet/topups", json={"amount": "12"}, headers=alice.headers
        )
        assert intent.status_code == 201, intent.text
        done = await client.post(
            f"{API}/admin/payments/{intent.json()['id']}/complete", headers=operator.headers
        )
        assert done.status_code == 200, done.text
        topup = await receive_until(ws, lambda m: m["type"] == "wallet_updated")
        assert topup["channel"] == "user"
        assert topup["data"] == {
            "reason": "topup",
            "reference_type": "payment",
            "reference_id": intent.json()["id"],
            "available": "12.000000",
            "reserved": "0.000000",
        }
        held = await client.post(
            f"{API}/wallet/withdrawals",
            json={"amount": "5", "destination": "IBAN DE89 3704"},
            headers=alice.headers,
        )
        assert held.status_code == 201, held.text
        hold = await receive_until(ws, lambda m: m["type"] == "wallet_updated")
        assert (hold["data"]["reason"], hold["data"]["available"], hold["data"]["reserved"]) == (
            "withdrawal_requested",
            "7.000000",
            "5.000000",
        )

        changed = await client.put(
            f"{API}/meters/{meter['id']}/status",
            json={"status": "maintenance"},
            headers=operator.headers,
        )
        assert changed.status_code == 200, changed.text
        status = await receive_until(ws, lambda m: m["type"] == "meter_status_changed")
        assert status["channel"] == f"meter:{meter['id']}"
        assert status["data"] == {
            "meter_id": meter["id"],
            "from": "active",
            "status": "maintenance",
        }
        await ws.close()
