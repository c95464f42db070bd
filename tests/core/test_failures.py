"""What a client gets when something breaks: the error shape, its headers, and a 503 with
Retry-After when a dependency is down; the connection stays usable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from gridex.app import build_runtime, create_app
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import API

BOOM = "/api/v1/boom"


def _app_with_a_bug(runtime: Runtime) -> FastAPI:
    app = create_app(runtime=runtime)

    async def boom() -> dict[str, str]:
        raise RuntimeError("a bug")

    app.add_api_route(BOOM, boom, methods=["GET"])
    return app


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_enabled": True}])
async def test_a_500_keeps_the_request_id_and_every_header(runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=_app_with_a_bug(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(BOOM, headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert body["request_id"] == "req-500"
    assert response.headers["x-request-id"] == "req-500"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "ratelimit-limit" in response.headers


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////nonexistent-gridex-dir/gridex.db",
        "postgresql+asyncpg://postgres@127.0.0.1:1/gridex",
    ],
)
async def test_a_database_outage_is_503_with_retry_after(url: str) -> None:
    runtime = build_runtime(make_settings(url), FrozenClock())
    try:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(
                f"{API}/auth/login", json={"username": "ada", "password": "Whatever-123"}
            )
    finally:
        await runtime.db.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["request_id"] == response.headers["x-request-id"]


@contextlib.asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes only this flag)
        await asyncio.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (x.partition(": ") for x in lines) if k.lower() == "content-length"
    )
    body = await asyncio.wait_for(reader.readexactly(length), timeout=5)
    return int(lines[0].split()[1]), body


async def test_a_500_leaves_the_keep_alive_connection_usable(runtime: Runtime) -> None:
    async with _serving(_app_with_a_bug(runtime)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            first, _ = await _exchange(reader, writer, BOOM)
            second, body = await _exchange(reader, writer, "/health/live")
        finally:
            writer.close()
    assert first == 500
    assert second == 200
    assert b"alive" in body


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "redis_url": "redis://127.0.0.1:1/0",
            "rate_limit_enabled": True,
            "rate_limit_anonymous": "2/minute",
        }
    ],
)
async def test_redis_down_limits_in_process_instead_of_failing(
    client: httpx.AsyncClient,
) -> None:
    codes = [(await client.get(f"{API}/departments/none")).status_code for _ in range(3)]
    assert codes == [404, 404, 429]
