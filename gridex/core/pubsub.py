"""Internal publish/subscribe for real-time events: in-process, or Redis when configured.

Domains never publish directly. They call :func:`emit` inside their unit of work; the event is
buffered on the session (``session.info``) and published by an ``after_commit`` hook, so a
request that rolls back publishes nothing and a subscriber never sees an event whose data was not
stored. A rollback drops the buffer.

Channels are plain strings (``market``, ``epoch:<start>``, ``user:<id>``); a message is
``{"type", "data", "ts"}`` (the WebSocket layer forwards it as is).

Backends: :class:`MemoryPubSub` (one process; every subscriber gets every message of its
channels) and :class:`RedisPubSub` (``GRIDEX_REDIS_URL``; Redis PUBLISH/SUBSCRIBE, so a
subscriber on any worker gets the events of every worker). Delivery is at most once: pub/sub is
for live updates, not for work that must not be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

import orjson
import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from gridex.core.clock import utc_iso
from gridex.core.metrics import EVENTS_DROPPED

log = structlog.get_logger(__name__)

_BUFFER = "gridex_pubsub_events"


class PubSub(Protocol):
    name: str

    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def publish_nowait(self, channel: str, message: dict[str, Any]) -> None:
        """Publish from synchronous code inside the event loop (the after-commit hook)."""
        ...

    def subscribe(self, *channels: str) -> Subscription: ...

    async def flush(self) -> None:
        """Wait until every message handed to ``publish_nowait`` has been sent."""
        ...

    async def close(self) -> None: ...


class Subscription(Protocol):
    """An async iterator of messages; ``await sub.close()`` (or ``async with``) to stop."""

    async def __aenter__(self) -> Subscription: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    async def get(self) -> dict[str, Any]:
        """The next message (bound the wait with ``asyncio.timeout``)."""
        ...

    async def add(self, *channels: str) -> None:
        """Also receive ``channels`` from now on (a WebSocket hub grows one subscription)."""
        ...

    async def remove(self, *channels: str) -> None:
        """Stop receiving ``channels``."""
        ...

    async def close(self) -> None: ...


def message(type: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"type": type, "data": data, "ts": utc_iso(at)}


# --------------------------------------------------------------------------------------------
# In-process backend
# --------------------------------------------------------------------------------------------


class _MemorySubscription:
    def __init__(self, hub: MemoryPubSub, channels: tuple[str, ...], maxsize: int) -> None:
        self._hub = hub
        self.channels: tuple[str, ...] = ()
        hub._add(self, channels)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)

    async def __aenter__(self) -> _MemorySubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.queue.get()

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()

    async def add(self, *channels: str) -> None:
        self._hub._add(self, channels)

    async def remove(self, *channels: str) -> None:
        self._hub._remove(self, channels)

    async def close(self) -> None:
        self._hub._remove(self, self.channels)


class MemoryPubSub:
    """Every subscriber of a channel gets each message; a subscriber that does not keep up
    loses the newest messages (its bounded queue is full) rather than slowing publishers."""

    name = "memory"

    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[_MemorySubscription]] = {}

    def _add(self, sub: _MemorySubscription, channels: tuple[str, ...]) -> None:
        new = tuple(c for c in dict.fromkeys(channels) if c not in sub.channels)
        sub.channels += new
        for channel in new:
            self._subscribers.setdefault(channel, set()).add(sub)

    def _remove(self, sub: _MemorySubscription, channels: tuple[str, ...]) -> None:
        gone = set(channels)
        sub.channels = tuple(c for c in sub.channels if c not in gone)
        for channel in gone:
            subs = self._subscribers.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[channel]

    def publish_nowait(self, channel: str, message: dict[str, Any]) -> None:
        for sub in tuple(self._subscribers.get(channel, ())):
            try:
                sub.queue.put_nowait({**message, "channel": channel})
            except asyncio.QueueFull:
                log.warning("pubsub_subscriber_full", channel=channel)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.publish_nowait(channel, message)

    def subscribe(self, *channels: str) -> _MemorySubscription:
        return _MemorySubscription(self, channels, self._queue_size)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribers.clear()


# --------------------------------------------------------------------------------------------
# Redis backend
# --------------------------------------------------------------------------------------------


class _RedisSubscription:
    def __init__(self, client: Any, channels: tuple[str, ...], prefix: str) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.channels = channels
        self._prefix = prefix
        self._subscribed = False

    async def _ensure(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            if self.channels:
                await self._pubsub.subscribe(*self.channels)

    async def __aenter__(self) -> _RedisSubscription:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        await self._ensure()
        async for raw in self._pubsub.listen():
            if raw.get("type") == "message":
                yield _decode(raw, self._prefix)

    async def get(self) -> dict[str, Any]:
        await self._ensure()
        while True:
            if not self._pubsub.subscribed:  # nothing to read yet (a hub before its first socket)
                await asyncio.sleep(0.05)
                continue
            raw = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if raw is not None and raw.get("type") == "message":
                return _decode(raw, self._prefix)

    async def add(self, *channels: str) -> None:
        await self._ensure()
        names = tuple(self._prefix + c for c in channels)
        self.channels = tuple(dict.fromkeys(self.channels + names))
        await self._pubsub.subscribe(*names)

    async def remove(self, *channels: str) -> None:
        names = {self._prefix + c for c in channels}
        self.channels = tuple(c for c in self.channels if c not in names)
        if self._subscribed and names:
            await self._pubsub.unsubscribe(*names)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.unsubscribe()
        await self._pubsub.aclose()


def _decode(raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    channel = raw["channel"]
    channel = channel.decode() if isinstance(channel, bytes) else str(channel)
    body: dict[str, Any] = orjson.loads(raw["data"])
    body["channel"] = channel.removeprefix(prefix)
    return body


class RedisPubSub:
    """Redis PUBLISH/SUBSCRIBE (``redis.asyncio``); channels carry a prefix so that several
    deployments can share one Redis."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "gridex:") -> None:
        from redis.asyncio import Redis  # imported here: Redis is optional at runtime

        self._client: Any = Redis.from_url(url)
        self._prefix = prefix
        self._pending: set[asyncio.Task[None]] = set()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._client.publish(self._prefix + channel, orjson.dumps(message))

    def publish_nowait(self, channel: str, message: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._publish_logged(channel, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish_logged(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self.publish(channel, message)
        except Exception as exc:  # Redis down: the event is dropped (at most once), and counted
            EVENTS_DROPPED.labels(str(message.get("type"))).inc()
            log.warning(
                "pubsub_publish_failed",
                channel=channel,
                type=message.get("type"),
                error=str(exc)[:200],
            )

    def subscribe(self, *channels: str) -> _RedisSubscription:
        return _RedisSubscription(
            self._client, tuple(self._prefix + c for c in channels), self._prefix
        )

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*tuple(self._pending), return_exceptions=True)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self.flush()
        await self._client.aclose()


def create_pubsub(redis_url: str | None) -> PubSub:
    """Redis when ``GRIDEX_REDIS_URL`` is set, else in-process."""
    return RedisPubSub(redis_url) if redis_url else MemoryPubSub()


# --------------------------------------------------------------------------------------------
# Publish after commit
# --------------------------------------------------------------------------------------------


def emit(
    session: AsyncSession | Session,
    pubsub: PubSub,
    channels: tuple[str, ...] | list[str],
    type: str,
    data: dict[str, Any],
    at: datetime,
) -> None:
    """Buffer an event in the unit of work; it is published only if the session commits."""
    buffer: list[tuple[PubSub, tuple[str, ...], dict[str, Any]]] = session.info.setdefault(
        _BUFFER, []
    )
    buffer.append((pubsub, tuple(channels), message(type, data, at)))


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    buffer = session.info.pop(_BUFFER, None)
    if not buffer:
        return
    for pubsub, channels, body in buffer:
        for channel in channels:
            try:
                pubsub.publish_nowait(channel, body)
            except Exception:  # a broken subscriber never fails the committed request
                log.exception("pubsub_publish_failed", channel=channel, type=body.get("type"))


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, _previous: object) -> None:
    session.info.pop(_BUFFER, None)
