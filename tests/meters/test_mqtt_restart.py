"""A broker restart loses no reading under the default MQTT settings.

The test runs its own Mosquitto (``/usr/sbin/mosquitto``, persistence on, a free port) so that
it can stop and start it; it is skipped where the binary is absent. The consumer runs with the
deployment defaults (plain persistent subscription, fixed client id, short fixed reconnect):
only the broker's URL is the test's."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiomqtt
import httpx
import orjson
import pytest
from sqlalchemy import func, select

from gridex.core.clock import FrozenClock
from gridex.core.config import Settings
from gridex.core.runtime import Runtime
from gridex.meters.models import MeterReading
from gridex.meters.mqtt import MqttBridge
from tests.factories import API, signed_in
from tests.meters.helpers import NOW, make_meter, reading

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="no /usr/sbin/mosquitto")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """A Mosquitto of the test's own, with its persistence file in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "max_queued_messages 100000\n"
            f"user {getpass.getuser()}\n"
        )
        self.log = directory / "mosquitto.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(MOSQUITTO), "-c", str(self.config), stdout=log, stderr=log
            )
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"mosquitto did not start: {self.log.read_text()}")

    async def stop(self) -> None:
        """SIGTERM: Mosquitto writes its sessions and queued messages to disk and exits."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    own = Broker(tmp_path)
    await own.start()
    yield own
    await own.stop()


async def _publish(port: int, topic: str, payloads: list[bytes]) -> None:
    """A device publishing with QoS 1: each publish returns once the broker has acknowledged."""
    ident = f"dev-{uuid.uuid4().hex[:8]}"
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=ident, protocol=aiomqtt.ProtocolVersion.V5
    ) as device:
        for payload in payloads:
            await device.publish(topic, payload, qos=1, timeout=10)


async def _stored(rt: Runtime, meter_id: uuid.UUID) -> int:
    async with rt.db.sessionmaker() as session:
        query = select(func.count()).select_from(MeterReading)
        return int(await session.scalar(query.where(MeterReading.meter_id == meter_id)) or 0)


async def _until_stored(rt: Runtime, meter_id: uuid.UUID, count: int, within: float) -> int:
    deadline = asyncio.get_running_loop().time() + within
    while (stored := await _stored(rt, meter_id)) < count:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    return stored


async def test_default_consumer_loses_nothing_over_a_broker_restart(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, broker: Broker
) -> None:
    clock.set(NOW)
    # The declared defaults, whatever the environment of the test run says.
    defaults = {
        name: field.default
        for name, field in Settings.model_fields.items()
        if name.startswith("mqtt_") and name != "mqtt_url"
    }
    settings = runtime.settings.model_copy(
        update={**defaults, "mqtt_url": f"mqtt://127.0.0.1:{broker.port}"}
    )
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner, interval_minutes=1)
    meter_id = uuid.UUID(meter["id"])
    topic = f"gridex/meters/{meter['serial']}/readings"
    total, before = 600, 300
    payloads = [
        orjson.dumps(reading(NOW - timedelta(minutes=i), 0.01, interval_minutes=1))
        for i in range(total)
    ]
    bridge = MqttBridge(dataclasses.replace(runtime, settings=settings))
    await bridge.start()
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        # While the consumer is connected; the broker stops with some of these still unacked
        # by the consumer (it acknowledges after its transaction commits).
        await _publish(broker.port, topic, payloads[:before])
        await broker.stop()
        await broker.start()
        # At once after the restart, before the consumer is back: the broker must queue these
        # for the consumer's persistent session.
        await _publish(broker.port, topic, payloads[before:])
        stored = await _until_stored(runtime, meter_id, total, within=60)
        assert stored == total, f"{total - stored} of {total} acknowledged readings were lost"
        await asyncio.wait_for(bridge.connected.wait(), 10)
    finally:
        await bridge.stop()
    latest = await client.get(f"{API}/meters/{meter['id']}/latest", headers=owner.headers)
    assert latest.json()["energy_consumed_kwh"] == 0.01
