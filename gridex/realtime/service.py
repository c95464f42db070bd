"""The WebSocket protocol of ``/ws`` and the hub that feeds every socket of one worker.

One :class:`Hub` per process holds one pub/sub subscription that grows and shrinks with the
channels its sockets watch: a channel is subscribed once per worker however many sockets share
it, and each event is encoded once and handed to every socket of the channel. A socket that
keeps up is written to at once; one that falls behind gets a bounded send queue and a task that
drains it, so a client that reads slowly fills only its own queue; when that overflows the
socket is closed (:data:`CLOSE_TOO_SLOW`) and the others go on untouched.

The protocol (docs/realtime.md): sign in with ``?token=<access token>`` or a first message
``{"op": "auth", "token": ...}``; then ``subscribe`` / ``unsubscribe`` a channel (``market``,
``epoch:<start>``, ``meter:<id>``, ``user``, the last one implicit) and ``ping``. The sockets of
a session close with :data:`CLOSE_AUTH` as soon as it is revoked (an event from auth) and, at the
latest, at the worker's next periodic session check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections import deque
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
import structlog

from gridex.auth.models import Role
from gridex.auth.service import SESSION_REVOKED, Principal, authenticate_bearer
from gridex.core.clock import utc_iso
from gridex.core.errors import GridexError
from gridex.core.metrics import WS_CLOSED, WS_CONNECTIONS, WS_DROPPED, WS_MESSAGES, WS_SUBSCRIPTIONS
from gridex.core.pubsub import PubSub, Subscription
from gridex.core.runtime import Runtime
from gridex.realtime import repository

log = structlog.get_logger(__name__)

# Close codes (the 4000-4999 range is the application's).
CLOSE_AUTH = 4401  # no, bad or expired credentials, or the session was revoked
CLOSE_FORBIDDEN = 4403  # a channel the user may not watch
CLOSE_TOO_SLOW = 4429  # the send queue overflowed: the client does not read fast enough
CLOSE_GOING_AWAY = 1001  # the worker shuts down

HUB = "realtime.hub"  # the runtime extension that holds the process's hub


class Socket(Protocol):
    """What the protocol needs of a WebSocket (the route adapts the ASGI connection)."""

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the client is gone."""
        ...

    def send(self, text: str) -> Coroutine[Any, Any, None]: ...

    async def close(self, code: int, reason: str) -> None: ...


def _frame(type: str, data: dict[str, Any], at: datetime) -> str:
    return orjson.dumps({"type": type, "data": data, "ts": utc_iso(at)}).decode()


# A speed trick (bench/ws.py): a socket that keeps up is written to right away, inside the
# fan-out loop, by running its send coroutine up to its first suspension; only a socket whose
# send has to wait (its transport is full) gets a task, and its later messages queue behind it.
# The server's send coroutine nearly always finishes without suspending, so this spares each
# delivery a task wake-up (an event, a handle and a task step), and each idle socket a parked
# task. It is what asyncio's eager tasks (Python 3.12) do.
_DONE = object()


def _step(coro: Coroutine[Any, Any, None]) -> object:
    """Run ``coro`` until it finishes (:data:`_DONE`) or suspends (what it waits on)."""
    try:
        return coro.send(None)
    except StopIteration:
        return _DONE


def _set_once(future: asyncio.Future[None], _: object) -> None:
    if not future.done():
        future.set_result(None)


async def _finish(coro: Coroutine[Any, Any, None], waiting: object) -> None:
    """Drive a coroutine that :func:`_step` left suspended on ``waiting`` to its end."""
    try:
        while True:
            if isinstance(waiting, asyncio.Future):
                # Wait for it without awaiting it (``coro`` already did, and takes its outcome
                # when it resumes).
                resumed = asyncio.get_running_loop().create_future()
                waiting.add_done_callback(functools.partial(_set_once, resumed))
                await resumed
            else:  # a bare yield (sleep(0))
                await asyncio.sleep(0)
            waiting = _step(coro)
            if waiting is _DONE:
                return
    except asyncio.CancelledError:
        coro.close()
        raise


class Connection:
    """One signed-in socket: its channels and its bounded send queue."""

    def __init__(self, socket: Socket, principal: Principal, queue_size: int) -> None:
        self.socket = socket
        self.user_id = principal.user.id
        self.session_id = principal.session_id
        self.role = principal.role
        self.region = principal.user.region
        self.channels: set[str] = set()
        self._limit = queue_size
        self._queue: deque[str] = deque()
        self._closing: tuple[int, str] | None = None
        self._gone = False
        # The task that drains the queue while the socket is behind; None while it keeps up.
        self.writer: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def offer(self, text: str) -> bool:
        """Send or queue ``text``; False when the queue is full (the caller closes the socket)."""
        if self._closing is not None or self._gone:
            return True  # on its way out: nothing more is sent, and that is no overflow
        if self.writer is not None:
            if len(self._queue) >= self._limit:
                return False
            self._queue.append(text)
            return True
        coro = self.socket.send(text)
        try:
            waiting = _step(coro)
        except Exception:  # the client is gone; the receive loop ends the connection
            self._gone = True
            return True
        if waiting is not _DONE:
            self.writer = asyncio.get_running_loop().create_task(self._drain(coro, waiting))
        return True

    def shut(self, code: int, reason: str) -> None:
        """Drop what is queued and close with ``code`` after the message being sent, if any."""
        if self._closing is None:
            self._closing = (code, reason)
            self._queue.clear()
            WS_CLOSED.labels(str(code)).inc()
            if self.writer is None:
                self.writer = asyncio.get_running_loop().create_task(self._drain(None, None))

    async def _drain(self, coro: Coroutine[Any, Any, None] | None, waiting: object) -> None:
        queue, send = self._queue, self.socket.send
        try:
            if coro is not None:
                await _finish(coro, waiting)
            while queue and self._closing is None:
                await send(queue.popleft())
            if self._closing is not None:
                await self.socket.close(*self._closing)
        except Exception:  # the client went away mid-send: the receive loop ends the connection
            self._gone = True
        finally:
            if self._closing is None:
                self.writer = None

    async def stop(self) -> None:
        """Wait (up to 5 s) for a server-side close to go out, then drop the writer."""
        writer = self.writer
        if writer is not None and self._closing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(writer), timeout=5)
        if writer is not None:
            writer.cancel()


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel as the client names it and as the pub/sub names it."""

    name: str  # market | epoch:<start> | meter:<id> | user
    internal: str  # market | epoch:<start> | meter:<id> | user:<user id>


class BadRequest(Exception):
    """A malformed message: answered with an ``error`` message, the socket stays open."""


class ChannelForbidden(Exception):
    """A channel the user may not watch: the socket closes with 4403."""


class Hub:
    """Every socket of this worker, and the one pub/sub subscription that feeds them."""

    def __init__(self, rt: Runtime, pubsub: PubSub) -> None:
        self._rt = rt
        self._pubsub = pubsub
        self._members: dict[str, set[Connection]] = {}
        self._sessions: dict[uuid.UUID, set[Connection]] = {}
        self._subscription: Subscription | None = None
        self._lock = asyncio.Lock()  # subscribe/unsubscribe reach the pub/sub in call order
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None

    # --- membership ----------------------------------------------------------------------

    def _start(self) -> Subscription:
        if self._subscription is None:
            self._subscription = self._pubsub.subscribe()
            loop = asyncio.get_running_loop()
            self._reader = loop.create_task(self._read(self._subscription))
            self._checker = loop.create_task(self._check_sessions())
        return self._subscription

    async def attach(self, conn: Connection) -> None:
        """A newly signed-in socket: it watches its user's channel from now on."""
        if conn.session_id is not None:
            self._sessions.setdefault(conn.session_id, set()).add(conn)
        WS_CONNECTIONS.inc()
        await self.join(conn, f"user:{conn.user_id}")

    async def join(self, conn: Connection, channel: str) -> None:
        subscription = self._start()
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
            WS_SUBSCRIPTIONS.inc()
            async with self._lock:
                await subscription.add(channel)
        members.add(conn)
        conn.channels.add(channel)

    async def leave(self, conn: Connection, channel: str) -> None:
        conn.channels.discard(channel)
        members = self._members.get(channel)
        if members is not None:
            members.discard(conn)
            if not members:
                await self._drop_channels([channel])

    def _detach(self, conn: Connection) -> list[str]:
        """Forget ``conn`` everywhere at once; the channels nobody else watches."""
        empty = []
        for channel in conn.channels:
            members = self._members.get(channel)
            if members is not None:
                members.discard(conn)
                if not members:
                    empty.append(channel)
        conn.channels.clear()
        if conn.session_id is not None:
            same = self._sessions.get(conn.session_id)
            if same is not None:
                same.discard(conn)
                if not same:
                    del self._sessions[conn.session_id]
        return empty

    async def _drop_channels(self, channels: list[str]) -> None:
        gone = [c for c in channels if c in self._members and not self._members[c]]
        for channel in gone:
            del self._members[channel]
            WS_SUBSCRIPTIONS.dec()
        if gone and self._subscription is not None:
            async with self._lock:
                with contextlib.suppress(Exception):  # pub/sub down: it forgets them anyway
                    await self._subscription.remove(*gone)

    def _later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_connection(self, conn: Connection, code: int, reason: str) -> None:
        """Stop feeding ``conn`` now and close it with ``code`` (once it is writable)."""
        conn.shut(code, reason)
        empty = self._detach(conn)
        if empty:
            self._later(self._drop_channels(empty))

    async def disconnected(self, conn: Connection) -> None:
        """The client is gone: forget the socket and stop its writer."""
        empty = self._detach(conn)
        WS_CONNECTIONS.dec()
        await conn.stop()
        if empty:
            await self._drop_channels(empty)

    # --- fan-out ---------------------------------------------------------------------------

    async def _read(self, subscription: Subscription) -> None:
        while True:
            try:
                message = await subscription.get()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: its client reconnects and resubscribes
                log.warning("ws_pubsub_read_failed", error=str(exc)[:200])
                await asyncio.sleep(1)
                continue
            try:
                self.deliver(message)
            except Exception:
                log.exception("ws_deliver_failed", type=message.get("type"))

    def deliver(self, message: dict[str, Any]) -> None:
        """Queue one pub/sub message to every socket of its channel: encoded once for all."""
        channel = str(message.pop("channel", ""))
        members = self._members.get(channel)
        if not members:
            return
        if channel.startswith("user:"):
            if message.get("type") == SESSION_REVOKED:
                self._sessions_revoked(members, message.get("data") or {})
                return
            message["channel"] = "user"  # the name the client knows it by
        else:
            message["channel"] = channel
        text = orjson.dumps(message).decode()
        slow = [conn for conn in members if not conn.offer(text)]
        WS_MESSAGES.inc(len(members) - len(slow))
        if slow:
            WS_DROPPED.inc(len(slow))
            for conn in slow:
                log.info("ws_send_queue_overflow", user_id=str(conn.user_id))
                self.close_connection(conn, CLOSE_TOO_SLOW, "send queue overflow")

    def _sessions_revoked(self, members: set[Connection], data: dict[str, Any]) -> None:
        only, keep = data.get("session_id"), data.get("except_session_id")
        for conn in tuple(members):
            sid = str(conn.session_id)
            if (only is None or sid == only) and sid != keep:
                self.close_connection(conn, CLOSE_AUTH, "session revoked")

    async def _check_sessions(self) -> None:
        """Close sockets whose session ended without this worker hearing of it (an event is
        at most once), or that expired while connected."""
        interval = self._rt.settings.ws_session_check_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_sessions()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ws_session_check_failed")

    async def check_sessions(self) -> int:
        """One liveness check of every session this worker holds sockets for; how many closed."""
        held = list(self._sessions)
        if not held:
            return 0
        async with self._rt.db.sessionmaker() as session:
            live = await repository.live_sessions(session, held, self._rt.clock.now())
        closed = 0
        for sid in held:
            if sid not in live:
                for conn in tuple(self._sessions.get(sid, ())):
                    self.close_connection(conn, CLOSE_AUTH, "session ended")
                    closed += 1
        return closed

    async def close(self) -> None:
        """Worker shutdown: say goodbye to every socket and leave the pub/sub."""
        for task in (self._reader, self._checker):
            if task is not None:
                task.cancel()
        for members in list(self._members.values()):
            for conn in tuple(members):
                conn.shut(CLOSE_GOING_AWAY, "server shutting down")
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()
            self._subscription = None


def hub_of(rt: Runtime) -> Hub:
    """The process's hub, made on first use."""
    hub = rt.extensions.get(HUB)
    if hub is None:
        hub = rt.extensions[HUB] = Hub(rt, rt.pubsub)
    assert isinstance(hub, Hub)
    return hub


async def close_hub(rt: Runtime) -> None:
    hub = rt.extensions.pop(HUB, None)
    if isinstance(hub, Hub):
        await hub.close()


# --- the protocol ------------------------------------------------------------------------------


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("A message is a JSON object with an 'op'") from None
    if not isinstance(body, dict) or not isinstance(body.get("op"), str):
        raise BadRequest("A message is a JSON object with an 'op'")
    return body


async def _sign_in(rt: Runtime, socket: Socket, token: str | None) -> Principal | None:
    """The principal of the query token or of the first message; None after closing 4401."""
    if token is None:
        try:
            async with asyncio.timeout(rt.settings.ws_auth_timeout_seconds):
                raw = await socket.receive()
        except TimeoutError:
            await _refuse(socket, "No auth message in time")
            return None
        if raw is None:
            return None
        try:
            body = _decode(raw)
        except BadRequest:
            body = {}
        if body.get("op") != "auth" or not isinstance(body.get("token"), str):
            await _refuse(socket, 'Authenticate first: {"op": "auth", "token": ...}')
            return None
        token = body["token"]
    try:
        async with rt.db.sessionmaker() as session:
            return await authenticate_bearer(session, rt, token)
    except GridexError as exc:
        await _refuse(socket, exc.message)
        return None


async def _refuse(socket: Socket, reason: str) -> None:
    WS_CLOSED.labels(str(CLOSE_AUTH)).inc()
    # A close reason is at most 123 bytes.
    await socket.close(CLOSE_AUTH, reason.encode()[:120].decode(errors="ignore"))


async def _resolve(rt: Runtime, conn: Connection, name: Any) -> Channel:
    """The channel ``name`` if it is well formed and ``conn`` may watch it."""
    if not isinstance(name, str) or not name:
        raise BadRequest("'channel' is market, epoch:<start>, meter:<id> or user")
    if name == "market":
        return Channel(name, name)
    if name == "user":
        return Channel(name, f"user:{conn.user_id}")
    kind, _, rest = name.partition(":")
    if kind == "epoch":
        try:
            start = datetime.fromisoformat(rest.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest("epoch:<start> takes the epoch's ISO 8601 start time") from None
        if start.tzinfo is None:
            raise BadRequest("epoch:<start> needs a time zone (e.g. Z)")
        internal = f"epoch:{utc_iso(start)}"
        return Channel(internal, internal)
    if kind == "meter":
        try:
            meter_id = uuid.UUID(rest)
        except ValueError:
            raise BadRequest("meter:<id> takes the meter's id") from None
        await _check_meter(rt, conn, meter_id)
        internal = f"meter:{meter_id}"
        return Channel(internal, internal)
    raise BadRequest("'channel' is market, epoch:<start>, meter:<id> or user")


async def _check_meter(rt: Runtime, conn: Connection, meter_id: uuid.UUID) -> None:
    """A meter's channel is for its owner, admins and the operators of its region; an unknown
    meter is refused the same way, so a socket learns nothing of other people's meters."""
    async with rt.db.sessionmaker() as session:
        found = await repository.meter_region_and_owner(session, meter_id)
    allowed = found is not None and (
        found[1] == conn.user_id
        or conn.role is Role.admin
        or (conn.role is Role.operator and conn.region is not None and conn.region == found[0])
    )
    if not allowed:
        raise ChannelForbidden(f"You may not watch meter:{meter_id}")


async def serve(rt: Runtime, socket: Socket, token: str | None) -> None:
    """Run one accepted socket until the client or the server ends it."""
    principal = await _sign_in(rt, socket, token)
    if principal is None:
        return
    hub = hub_of(rt)
    conn = Connection(socket, principal, rt.settings.ws_send_queue)
    del principal  # the connection keeps what it needs; the account row can go
    await hub.attach(conn)
    now = rt.clock.now
    conn.offer(_frame("welcome", {"user_id": str(conn.user_id), "channels": ["user"]}, now()))
    try:
        while not conn.closing:
            raw = await socket.receive()
            if raw is None or conn.closing:
                break
            try:
                await _handle(rt, hub, conn, _decode(raw))
            except BadRequest as exc:
                error = {"code": "VALIDATION_ERROR", "message": str(exc)}
                if not conn.offer(_frame("error", error, now())):
                    hub.close_connection(conn, CLOSE_TOO_SLOW, "send queue overflow")
            except ChannelForbidden as exc:
                hub.close_connection(conn, CLOSE_FORBIDDEN, str(exc)[:120])
    finally:
        await hub.disconnected(conn)


async def _handle(rt: Runtime, hub: Hub, conn: Connection, body: dict[str, Any]) -> None:
    op, now = body["op"], rt.clock.now()
    reply: str
    if op == "ping":
        reply = _frame("pong", {}, now)
    elif op in ("subscribe", "unsubscribe"):
        channel = await _resolve(rt, conn, body.get("channel"))
        if op == "subscribe":
            if channel.internal not in conn.channels:
                if len(conn.channels) >= rt.settings.ws_max_channels:
                    raise BadRequest(f"At most {rt.settings.ws_max_channels} channels a socket")
                await hub.join(conn, channel.internal)
        else:
            if channel.name == "user":
                raise BadRequest("The user channel cannot be left")
            await hub.leave(conn, channel.internal)
        reply = _frame(f"{op}d", {"channel": channel.name}, now)
    elif op == "auth":
        raise BadRequest("Already authenticated")
    else:
        raise BadRequest("'op' is subscribe, unsubscribe, ping or auth")
    if not conn.offer(reply):
        hub.close_connection(conn, CLOSE_TOO_SLOW, "send queue overflow")
