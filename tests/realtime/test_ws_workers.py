"""Two API processes sharing Redis: an event raised in one reaches a socket held by the other."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gridex.core.clock import utc_iso
from gridex.core.runtime import Runtime
from tests.conftest import TEST_REGIONS, TEST_SECRET
from tests.factories import API, PASSWORD, make_user
from tests.meters.helpers import reading
from tests.realtime.helpers import close_code, receive_until, signed_in_socket, subscribe

REDIS_URL = os.environ.get("GRIDEX_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="GRIDEX_TEST_REDIS_URL is not set")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two ``uvicorn gridex.asgi:app`` processes on the test database and the same Redis."""
    env = {
        **os.environ,
        "GRIDEX_ENV": "test",
        "GRIDEX_SECRET_KEY": TEST_SECRET,
        "GRIDEX_DATABASE_URL": database_url,
        "GRIDEX_REDIS_URL": str(REDIS_URL),
        "GRIDEX_RUN_JOBS": "false",
        "GRIDEX_RATE_LIMIT_ENABLED": "false",
        "GRIDEX_CHAIN": "off",
        "GRIDEX_DATA_DIR": str(tmp_path),
        "GRIDEX_REGIONS": ",".join(TEST_REGIONS),
        "GRIDEX_LOG_LEVEL": "WARNING",
    }
    ports = [_free_port(), _free_port()]
    serve = [sys.executable, "-m", "uvicorn", "gridex.asgi:app", "--host", "127.0.0.1"]
    procs = [
        subprocess.Popen(
            [*serve, "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        yield f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)


async def _up(host: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=f"http://{host}")
    async with asyncio.timeout(60):
        while True:
            try:
                if (await client.get("/health/live")).status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


@pytest.fixture
async def clients(workers: tuple[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An HTTP client of the first process and the ``ws://`` base of the second."""
    first, second = workers
    http = await _up(first)
    await (await _up(second)).aclose()
    try:
        yield http, f"ws://{second}"
    finally:
        await http.aclose()


async def test_an_event_in_one_process_reaches_a_socket_on_the_other(
    clients: tuple[httpx.AsyncClient, str], runtime: Runtime
) -> None:
    http, ws_base = clients
    account = await make_user(runtime, region="north")
    login = await http.post(
        f"{API}/auth/login", json={"username": account.username, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    made = await http.post(
        f"{API}/meters",
        json={"serial": f"SM_{account.id.hex[:10]}", "kind": "bidirectional", "region": "north"}
        | {"capacity_kw": 10},
        headers=headers,
    )
    assert made.status_code == 201, made.text
    meter_id = made.json()["id"]

    # The socket lives on the second process; the reading and the logout go to the first.
    ws = await signed_in_socket(ws_base, login.json()["access_token"])
    assert (await subscribe(ws, f"meter:{meter_id}"))["type"] == "subscribed"
    now = datetime.now(UTC)  # these processes run on the real clock
    end = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    stored = await http.post(
        f"{API}/meters/{meter_id}/readings",
        json={"readings": [reading(end, 0.2, 0.0)]},
        headers=headers,
    )
    assert stored.status_code in (200, 201), stored.text
    assert stored.json()["accepted"] == 1, stored.text
    got = await receive_until(ws, lambda m: m["type"] == "reading_received", seconds=30)
    assert got["data"] == {"meter_id": meter_id, "timestamp": utc_iso(end)}
    assert got["channel"] == f"meter:{meter_id}"

    logout = await http.post(f"{API}/auth/logout", headers=headers)
    assert logout.status_code in (200, 204), logout.text
    assert await close_code(ws) == 4401
