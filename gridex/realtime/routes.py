"""``/ws``: the WebSocket endpoint (outside ``/api/v1``, as the API reference says)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gridex.core.runtime import Runtime
from gridex.realtime import service

ws_router = APIRouter()


class _StarletteSocket:
    """Starlette's WebSocket as the protocol's :class:`service.Socket`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def receive(self) -> str | bytes | None:
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text: str | None = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def send(self, text: str) -> None:
        await self._ws.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


@ws_router.websocket("/ws")
async def websocket_events(websocket: WebSocket) -> None:
    """Live events: sign in with ``?token=`` or a first ``{"op": "auth", "token"}`` message,
    then subscribe to channels (docs/realtime.md)."""
    rt: Runtime = websocket.app.state.runtime
    await websocket.accept()
    await service.serve(rt, _StarletteSocket(websocket), websocket.query_params.get("token"))
