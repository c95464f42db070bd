"""``/ws``: the WebSocket endpoint (outside ``/api/v1``, as the API reference says)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, cast

from fastapi import APIRouter
from starlette.datastructures import QueryParams
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from gridex.core.runtime import Runtime
from gridex.realtime import service


class _AsgiSocket:
    """The ASGI connection as the protocol's :class:`service.Socket`. Plain ASGI rather than
    Starlette's ``WebSocket``: every event goes out through :meth:`send`, and this is its
    shortest path."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send

    async def receive(self) -> str | bytes | None:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return None
            if message["type"] == "websocket.receive":
                text: str | None = message.get("text")
                return text if text is not None else bytes(message.get("bytes") or b"")

    def send(self, text: str) -> Coroutine[Any, Any, None]:
        return cast(Coroutine[Any, Any, None], self._send({"type": "websocket.send", "text": text}))

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


class _Endpoint:
    """Live events: sign in with ``?token=`` or a first ``{"op": "auth", "token"}`` message,
    then subscribe to channels (docs/realtime.md)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        rt: Runtime = scope["app"].state.runtime
        token = QueryParams(scope.get("query_string", b"")).get("token")
        await service.serve(rt, _AsgiSocket(receive, send), token)


ws_router = APIRouter()
ws_router.routes.append(WebSocketRoute("/ws", _Endpoint(), name="websocket_events"))
