"""A real server on a loopback port and real ``websockets`` clients for the /ws tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gridex.app import create_app
from gridex.core.runtime import Runtime


@contextlib.asynccontextmanager
async def serving(runtime: Runtime) -> AsyncIterator[str]:
    """The app served by uvicorn on a free loopback port; yields the ``ws://`` base URL."""
    config = uvicorn.Config(
        create_app(runtime=runtime), host="127.0.0.1", port=0, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes only this flag)
        await asyncio.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def receive(ws: ClientConnection, seconds: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        body: dict[str, Any] = orjson.loads(await ws.recv())
        return body


async def receive_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], seconds: float = 10
) -> dict[str, Any]:
    """The first message that ``match`` accepts (others are skipped)."""
    async with asyncio.timeout(seconds):
        while True:
            body: dict[str, Any] = orjson.loads(await ws.recv())
            if match(body):
                return body


async def close_code(ws: ClientConnection, seconds: float = 10) -> int | None:
    """Read until the server closes the socket; the close code it sent."""
    async with asyncio.timeout(seconds):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code


async def signed_in_socket(base: str, token: str) -> ClientConnection:
    ws = await connect(f"{base}/ws?token={token}")
    welcome = await receive(ws)
    assert welcome["type"] == "welcome"
    return ws


async def subscribe(ws: ClientConnection, channel: str) -> dict[str, Any]:
    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
    return await receive(ws)
