"""Against a real MQTT broker (``GRIDEX_TEST_MQTT_URL``, e.g. mqtt://127.0.0.1:1883); skipped
without one. Each test uses its own shared-subscription group and client ids, so other
consumers on the same broker never take its messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import httpx
import orjson
import pytest
from sqlalchemy import func, select

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.metrics import MQTT_MESSAGES
from gridex.core.runtime import Runtime
from gridex.meters.jobs import expire_commands
from gridex.meters.models import MeterStatusEvent, RejectedReading
from gridex.meters.mqtt import MqttBridge
from tests.factories import API, signed_in
from tests.meters.helpers import NOW, Device, make_meter, reading

MQTT_URL = os.environ.get("GRIDEX_TEST_MQTT_URL")
pytestmark = pytest.mark.skipif(not MQTT_URL, reason="GRIDEX_TEST_MQTT_URL is not set")


def _broker() -> tuple[str, int]:
    url = urlsplit(MQTT_URL or "")
    return url.hostname or "127.0.0.1", url.port or 1883


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    tag = uuid.uuid4().hex[:8]
    return {
        "mqtt_url": MQTT_URL,
        "mqtt_client_id": f"gridex-test-{tag}",
        "mqtt_shared_group": f"test{tag}",
        "mqtt_session_expiry_seconds": 120,
    }


@pytest.fixture
async def bridge(runtime: Runtime) -> AsyncIterator[MqttBridge]:
    bridge = MqttBridge(runtime)
    await bridge.start()
    await asyncio.wait_for(bridge.connected.wait(), 10)
    yield bridge
    await bridge.stop()


def device_client(**kwargs: Any) -> aiomqtt.Client:
    host, port = _broker()
    kwargs.setdefault("identifier", f"dev-{uuid.uuid4().hex[:8]}")
    return aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5, **kwargs)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _count(rt: Runtime, model: Any, **where: Any) -> int:
    async with rt.db.sessionmaker() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await session.scalar(query) or 0)


async def test_reading_malformed_and_last_will(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, bridge: MqttBridge
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    device = Device()
    meter = await make_meter(client, owner, device_public_key=device.public_key)
    serial, meter_id = meter["serial"], uuid.UUID(meter["id"])
    topic = f"gridex/meters/{serial}"
    invalid_before = _mqtt_count("readings", "invalid_json")
    async with device_client() as mqtt:
        await mqtt.publish(
            f"{topic}/readings", orjson.dumps(device.sign(reading(NOW, 0.5, 0.25))), qos=1
        )
        await mqtt.publish(f"{topic}/readings", b"{not json", qos=1)
        await mqtt.publish(
            f"{topic}/readings", orjson.dumps(reading(NOW - timedelta(minutes=15))), qos=1
        )
    await eventually(lambda: _has_latest(client, owner.headers, meter["id"]))
    await eventually(lambda: _count_ge(runtime, RejectedReading, 2, meter_serial=serial))
    # The payload that is not JSON is counted and its dead letter names the topic's meter.
    assert _mqtt_count("readings", "invalid_json") >= invalid_before + 1
    assert await _count(runtime, RejectedReading, meter_id=meter_id, reason="malformed") == 1
    async with runtime.db.sessionmaker() as session:
        reasons = sorted(
            await session.scalars(
                select(RejectedReading.reason).where(RejectedReading.meter_serial == serial)
            )
        )
    assert reasons == ["malformed", "missing_signature"]
    assert (await client.get(f"{API}/meters/{meter['id']}", headers=owner.headers)).json()["online"]

    # A device that drops off the network: its Last Will marks the meter offline at once.
    await _drop_with_will(f"{topic}/status", b"offline")
    await eventually(
        lambda: _count_ge(runtime, MeterStatusEvent, 1, meter_id=meter_id, reason="last_will")
    )
    assert not (await client.get(f"{API}/meters/{meter['id']}", headers=owner.headers)).json()[
        "online"
    ]


def _mqtt_count(topic: str, outcome: str) -> float:
    value: float = MQTT_MESSAGES.labels(topic, outcome)._value.get()
    return value


async def _online(client: httpx.AsyncClient, headers: dict[str, str], meter_id: str) -> bool:
    response = await client.get(f"{API}/meters/{meter_id}", headers=headers)
    online: bool = response.json()["online"]
    return online


async def test_a_retained_online_does_not_revive_a_dead_meter_on_reconnect(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, bridge: MqttBridge
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner)
    status = f"gridex/meters/{meter['serial']}/status"
    try:
        # The old recipe: a retained "online", then the device dies with a plain Last Will.
        async with device_client() as mqtt:
            await mqtt.publish(status, b"online", qos=1, retain=True)
        await eventually(lambda: _online(client, owner.headers, meter["id"]))
        await _drop_with_will(status, b"offline")
        await eventually(lambda: _not(_online(client, owner.headers, meter["id"])))

        # Gridex reconnects: the broker hands the new subscription the retained "online".
        ignored = _mqtt_count("status", "retained_ignored")
        await bridge.stop()
        again = MqttBridge(runtime)
        await again.start()
        try:
            await asyncio.wait_for(again.connected.wait(), 10)
            await eventually(lambda: _above(_mqtt_count, ("status", "retained_ignored"), ignored))
        finally:
            await again.stop()
        assert not await _online(client, owner.headers, meter["id"])
    finally:
        async with device_client() as mqtt:  # clear the retained message
            await mqtt.publish(status, b"", qos=1, retain=True)


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def _above(read: Callable[..., float], args: tuple[str, str], floor: float) -> bool:
    return read(*args) > floor


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


async def _drop_with_will(topic: str, will: bytes) -> None:
    """A device with a Last Will that vanishes without DISCONNECT (MQTT 3.1.1 on a raw
    socket, so that nothing closes the session politely)."""
    host, port = _broker()
    reader, writer = await asyncio.open_connection(host, port)
    flags = 0x02 | 0x04 | 0x08  # clean session, will, will QoS 1
    body = (
        _field(b"MQTT")
        + bytes([4, flags])
        + (30).to_bytes(2, "big")
        + _field(f"dev-{uuid.uuid4().hex[:8]}".encode())
        + _field(topic.encode())
        + _field(will)
    )
    writer.write(bytes([0x10, len(body)]) + body)
    await writer.drain()
    assert (await reader.readexactly(4))[0] == 0x20  # CONNACK
    writer.transport.abort()


async def _has_latest(client: httpx.AsyncClient, headers: dict[str, str], meter_id: str) -> bool:
    response = await client.get(f"{API}/meters/{meter_id}/latest", headers=headers)
    return response.status_code == 200


async def _count_ge(rt: Runtime, model: Any, n: int, **where: Any) -> bool:
    return await _count(rt, model, **where) >= n


async def test_command_round_trip_and_timeout(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, bridge: MqttBridge
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    meter = await make_meter(client, owner)
    serial = meter["serial"]
    received: list[dict[str, Any]] = []

    async def simulated_device(ready: asyncio.Event) -> None:
        async with device_client() as dev:
            await dev.subscribe(f"gridex/meters/{serial}/commands", qos=1)
            ready.set()
            async for message in dev.messages:
                body = orjson.loads(message.payload)  # type: ignore[arg-type]
                received.append(body)
                ack = {
                    "command_id": body["command_id"],
                    "status": "ok",
                    "result": {"rebooted": True},
                }
                await dev.publish(f"gridex/meters/{serial}/commands/ack", orjson.dumps(ack), qos=1)

    ready = asyncio.Event()
    task = asyncio.create_task(simulated_device(ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        url = f"{API}/meters/{meter['id']}/commands"
        created = await client.post(url, json={"command": "reboot"}, headers=owner.headers)
        assert created.status_code == 202, created.text
        assert created.json()["status"] == "pending"
        command_id = created.json()["command_id"]

        async def acked() -> bool:
            body = (await client.get(f"{url}/{command_id}", headers=owner.headers)).json()
            return bool(body["status"] == "acked")

        await eventually(acked)
        assert received[0]["command"] == "reboot"
        assert received[0]["command_id"] == command_id
        done = (await client.get(f"{url}/{command_id}", headers=owner.headers)).json()
        assert done["result"] == {"rebooted": True}
        # Owners send only safe commands.
        relay = await client.post(url, json={"command": "relay_off"}, headers=owner.headers)
        assert relay.status_code == 403
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # Nobody answers now: past the deadline the command is `timeout`.
    silent = await client.post(
        f"{API}/meters/{meter['id']}/commands",
        json={"command": "relay_off", "timeout_seconds": 5},
        headers=operator.headers,
    )
    command_id = silent.json()["command_id"]

    async def sent() -> bool:
        body = (
            await client.get(
                f"{API}/meters/{meter['id']}/commands/{command_id}", headers=operator.headers
            )
        ).json()
        return bool(body["status"] == "sent")

    await eventually(sent)
    clock.advance(timedelta(seconds=6))
    assert await expire_commands(runtime) == 1
    final = await client.get(
        f"{API}/meters/{meter['id']}/commands/{command_id}", headers=operator.headers
    )
    assert final.json()["status"] == "timeout"
