"""The MQTT side of telemetry: a consumer of readings, status and command acks, and the
publisher of commands. Runs when ``GRIDEX_MQTT_URL`` is set.

Delivery is at least once end to end, also over a broker restart: the consumer subscribes with
QoS 1 over a persistent session (fixed client id, clean start off, session expiry) with a plain
subscription by default, which the broker keeps together with the messages queued for it while
the consumer is away; it acknowledges each message only after the transaction that stored it
has committed, and reconnects after a fixed short delay (``GRIDEX_MQTT_RECONNECT_SECONDS``).
Redelivered readings are duplicates, which ingest counts and ignores. An MQTT v5 shared
subscription (``GRIDEX_MQTT_SHARED_GROUP``) spreads the load over several consumers, but
Mosquitto 2.0 drops what is published to a shared group while no member is connected. A
message that cannot be read goes to the dead-letter table and is acknowledged: it never stops
the consumer.

Retained status messages are ignored: the broker hands them to every new subscription, so a
retained ``online`` of a device long dead would mark it online again each time Gridex
(re)connects. Liveness comes from live messages: readings, a status sent now, a Last Will.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import orjson
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.metrics import MQTT_MESSAGES
from gridex.core.runtime import Runtime
from gridex.meters.events import status_changed
from gridex.meters.ingest import Rejection, dead_letters, ingest
from gridex.meters.models import CommandStatus, Meter, MeterCommand
from gridex.meters.service import meters_by_serial
from gridex.meters.validation import Item

log = structlog.get_logger(__name__)

TOPIC_PREFIX = "gridex/meters/"
MAX_BATCH = 1000  # messages stored in one transaction
COMMAND_POLL_SECONDS = 0.2


def client_settings(rt: Runtime) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments from ``GRIDEX_MQTT_URL`` (mqtt:// or mqtts://)."""
    url = urlsplit(rt.settings.mqtt_url or "")
    if url.scheme not in ("mqtt", "mqtts"):
        raise ValueError("GRIDEX_MQTT_URL must be mqtt://host[:port] or mqtts://host[:port]")
    kwargs: dict[str, Any] = {
        "hostname": url.hostname or "127.0.0.1",
        "port": url.port or (8883 if url.scheme == "mqtts" else 1883),
    }
    if url.username:
        kwargs["username"] = unquote(url.username)
        kwargs["password"] = unquote(url.password) if url.password else None
    if url.scheme == "mqtts":
        kwargs["tls_params"] = aiomqtt.TLSParameters()
    return kwargs


def _serial_and_kind(topic: str) -> tuple[str, str] | None:
    """(serial, "readings" | "status" | "ack") of a device topic, None for anything else."""
    if not topic.startswith(TOPIC_PREFIX):
        return None
    rest = topic[len(TOPIC_PREFIX) :].split("/")
    if len(rest) == 2 and rest[1] in ("readings", "status"):
        return rest[0], rest[1]
    if len(rest) == 3 and rest[1:] == ["commands", "ack"]:
        return rest[0], "ack"
    return None


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="replace")[:10_000]


def _raw(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


def _payload_text(message: aiomqtt.Message) -> str:
    return _text(_raw(message))


class MqttBridge:
    """One consumer connection per process over a persistent session. By default a plain
    subscription (nothing is lost over a broker restart); with ``GRIDEX_MQTT_SHARED_GROUP``
    several processes share the load through that shared subscription group."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        s = rt.settings
        # "{pid}" in the id tells apart the workers of one `gridex serve --workers N` (their
        # sessions then do not outlive them).
        template = s.mqtt_client_id or "gridex-{hostname}"
        self.client_id = template.format(hostname=socket.gethostname(), pid=os.getpid())
        self.group = s.mqtt_shared_group
        self.connected = asyncio.Event()
        self.processed = 0
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gridex-mqtt")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    def _new_client(self) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.rt.settings.mqtt_session_expiry_seconds
        props.ReceiveMaximum = MAX_BATCH
        client = aiomqtt.Client(
            **client_settings(self.rt),
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # resume the persistent session: keep what queued meanwhile
            properties=props,
            keepalive=30,
        )
        # Acknowledge only after the store has committed (at-least-once processing).
        client._client.manual_ack_set(True)
        return client

    async def _run(self) -> None:
        delay = self.rt.settings.mqtt_reconnect_seconds
        while True:
            try:
                async with self._new_client() as client:
                    self._client = client
                    options = SubscribeOptions(qos=1)
                    # Subscribing again on every connect: a broker that lost the session's
                    # subscriptions (Mosquitto 2.0 does not persist shared ones) gets them back.
                    share = f"$share/{self.group}/" if self.group else ""
                    await client.subscribe(
                        [
                            (f"{share}gridex/meters/+/readings", options),
                            (f"{share}gridex/meters/+/status", options),
                            (f"{share}gridex/meters/+/commands/ack", options),
                        ]
                    )
                    self.connected.set()
                    log.info("mqtt_connected", client_id=self.client_id, group=self.group)
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._consume(client))
                        tasks.create_task(self._dispatch_commands(client))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                self._client = None
                log.warning("mqtt_disconnected", error=repr(exc), retry_in=delay)
                # A little jitter, so that the consumers of a cluster do not reconnect in step.
                await asyncio.sleep(delay * (1 + random.random() / 4))

    # --- consuming -----------------------------------------------------------------------

    async def _consume(self, client: aiomqtt.Client) -> None:
        messages = aiter(client.messages)
        while True:
            batch = [await anext(messages)]
            while len(client.messages) and len(batch) < MAX_BATCH:
                batch.append(await anext(messages))
            await self._store(batch)
            for message in batch:  # in order of arrival, as MQTT requires
                if message.qos > 0:
                    client._client.ack(message.mid, message.qos)
            self.processed += len(batch)

    async def _store_once(self, batch: Sequence[aiomqtt.Message]) -> None:
        async with self.rt.db.sessionmaker() as session:
            await self.handle(session, batch)
            await session.commit()

    async def _store(self, batch: Sequence[aiomqtt.Message]) -> None:
        """Store a batch in one transaction; if that fails, message by message, so that one
        poisonous message is dead-lettered instead of blocking the stream."""
        try:
            await self._store_once(batch)
            return
        except Exception:
            log.exception("mqtt_batch_failed", size=len(batch))
        for message in batch:
            try:
                if len(batch) > 1:
                    await self._store_once([message])
                    continue
            except Exception:
                log.exception("mqtt_message_failed", topic=str(message.topic))
            await self._dead_letter(message, "processing_error", "The message could not be stored")

    async def _dead_letter(self, message: aiomqtt.Message, reason: str, text: str) -> None:
        # When even this fails the database is down: raising reconnects, and the broker
        # redelivers everything not acknowledged.
        async with self.rt.db.sessionmaker() as session:
            parsed = _serial_and_kind(str(message.topic))
            session.add_all(
                dead_letters(
                    [
                        Rejection(
                            0,
                            "VALIDATION_ERROR",
                            reason,
                            text,
                            {"topic": str(message.topic), "payload": _payload_text(message)},
                            None,
                            parsed[0] if parsed else None,
                        )
                    ],
                    "mqtt",
                    self.rt.clock.now(),
                )
            )
            await session.commit()

    async def handle(self, session: AsyncSession, batch: Sequence[aiomqtt.Message]) -> None:
        """Readings, status changes and command acks of ``batch``, in the caller's session."""
        now = self.rt.clock.now()
        readings: list[tuple[str, Any]] = []
        malformed: list[Rejection] = []
        statuses: list[tuple[str, str]] = []
        acks: list[tuple[str, dict[str, Any]]] = []
        for message in batch:
            topic = str(message.topic)
            parsed = _serial_and_kind(topic)
            raw = _raw(message)
            if parsed is None:
                continue
            serial, kind = parsed
            if kind == "status":
                if message.retain:
                    MQTT_MESSAGES.labels(kind, "retained_ignored").inc()
                    continue
                MQTT_MESSAGES.labels(kind, "received").inc()
                statuses.append((serial, raw.decode("utf-8", errors="replace").strip()))
                continue
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                MQTT_MESSAGES.labels(kind, "invalid_json").inc()
                malformed.append(
                    Rejection(
                        0,
                        "VALIDATION_ERROR",
                        "malformed",
                        "The payload is not JSON",
                        {"topic": topic, "payload": _text(raw)},
                        None,
                        serial,
                    )
                )
                continue
            MQTT_MESSAGES.labels(kind, "received").inc()
            if kind == "ack":
                if isinstance(body, dict):
                    acks.append((serial, body))
                continue
            if (
                isinstance(body, dict)
                and set(body) == {"readings"}
                and isinstance(body["readings"], list)
            ):
                items = body["readings"]
            elif isinstance(body, list):
                items = body
            else:
                items = [body]
            readings.extend((serial, item) for item in items)

        if readings:
            meters = await meters_by_serial(session, {s for s, _ in readings}, None)
            items_in: list[Item] = []
            for i, (serial, payload) in enumerate(readings):
                item = Item(i, payload, meters.get(serial), serial)
                if isinstance(payload, dict) and payload.get("meter_serial", serial) != serial:
                    item.malformed = ("malformed", "meter_serial differs from the topic")
                items_in.append(item)
            await ingest(session, self.rt, items_in, source="mqtt")
        if malformed:
            # The dead letters name the meter of the topic, as a refused reading's do.
            serials = {r.meter_serial for r in malformed if r.meter_serial}
            known = await meters_by_serial(session, serials, None)
            for rejection in malformed:
                meter = known.get(rejection.meter_serial or "")
                rejection.meter_id = meter.id if meter is not None else None
            session.add_all(dead_letters(malformed, "mqtt", now))
        for serial, status in statuses:
            await self._status(session, serial, status, now)
        for serial, ack in acks:
            await self._ack(session, serial, ack, now)
        await session.flush()

    async def _status(
        self, session: AsyncSession, serial: str, payload: str, now: datetime
    ) -> None:
        status = payload
        if payload.startswith("{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(payload)
                status = str(body.get("status", "")) if isinstance(body, dict) else ""
        status = status.lower()
        if status not in ("online", "offline"):
            return
        meter = await session.scalar(
            select(Meter).where(Meter.serial == serial, Meter.deleted_at.is_(None))
        )
        if meter is None or meter.online == (status == "online"):
            return
        meter.online = status == "online"
        status_changed(
            session,
            self.rt.pubsub,
            meter.id,
            status,
            # A device's Last Will is "offline"; "online" is its own announcement.
            reason="last_will" if status == "offline" else "device_status",
            details={"serial": serial},
            now=now,
        )

    async def _ack(
        self, session: AsyncSession, serial: str, ack: dict[str, Any], now: datetime
    ) -> None:
        try:
            command_id = uuid.UUID(str(ack.get("command_id")))
        except ValueError:
            return
        ok = str(ack.get("status", "ok")).lower() in ("ok", "acked", "success", "done")
        result = ack.get("result")
        error = ack.get("error")
        meter_ids = select(Meter.id).where(Meter.serial == serial)
        await session.execute(
            update(MeterCommand)
            .where(
                MeterCommand.id == command_id,
                MeterCommand.meter_id.in_(meter_ids),
                MeterCommand.status.in_([CommandStatus.pending, CommandStatus.sent]),
            )
            .values(
                status=CommandStatus.acked if ok else CommandStatus.failed,
                completed_at=now,
                result=result if isinstance(result, dict) else None,
                error=None if ok else str(error or "failed")[:500],
            )
            .execution_options(synchronize_session=False)
        )

    # --- commands ------------------------------------------------------------------------

    async def _dispatch_commands(self, client: aiomqtt.Client) -> None:
        """Publish pending commands (an outbox): claim each row, commit, then publish."""
        while True:
            now = self.rt.clock.now()
            async with self.rt.db.sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(MeterCommand, Meter.serial)
                        .join(Meter, Meter.id == MeterCommand.meter_id)
                        .where(
                            MeterCommand.status == CommandStatus.pending,
                            MeterCommand.deadline > now,
                        )
                        .order_by(MeterCommand.created_at)
                        .limit(100)
                    )
                ).all()
                claimed = []
                for command, serial in rows:
                    result = await session.execute(
                        update(MeterCommand)
                        .where(
                            MeterCommand.id == command.id,
                            MeterCommand.status == CommandStatus.pending,
                        )
                        .values(status=CommandStatus.sent, sent_at=now)
                        .execution_options(synchronize_session=False)
                    )
                    if result.rowcount == 1:  # type: ignore[attr-defined]
                        claimed.append((command, serial))
                await session.commit()
            for command, serial in claimed:
                payload = {
                    "command_id": str(command.id),
                    "command": command.command,
                    "params": command.params,
                    "deadline": utc_iso(command.deadline),
                }
                await client.publish(
                    f"{TOPIC_PREFIX}{serial}/commands", orjson.dumps(payload), qos=1
                )
            await asyncio.sleep(COMMAND_POLL_SECONDS)
