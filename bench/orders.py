"""Order entry throughput: ``POST /api/v1/market/orders`` against a real ``gridex serve``.

Starts one worker (a fresh SQLite database unless GRIDEX_BENCH_DATABASE_URL is set: then that
PostgreSQL database with its schema dropped and created again, so runs do not add up), seeds one
trader per client (a bidirectional meter and funds), signs them in, then drives the order
endpoint with concurrent keep-alive connections for a fixed time: each client places small limit
orders (buys and sells alternating, prices spread over the band) for the next open epoch.
``bare_rps`` is ``/health/live`` (routing and middleware, no database) in the same run; ``ratio``
is ``orders_per_s / bare_rps``. ``server_cpu_ms_per_order`` is the server process's CPU time
(user + system, from ``/proc``) over the orders it answered: on a shared machine it varies far
less than the rates, which depend on how much CPU the server gets. Prints one JSON line.

    .venv/bin/python bench/orders.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ledger import _prepare_postgres, bench_user  # noqa: E402

PASSWORD = "Bench-Password-2025"
REGION = "bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _seed(database_url: str, count: int) -> list[str]:
    """Create ``count`` verified prosumers with a meter and funds; returns their usernames."""
    from gridex.app import build_runtime
    from gridex.core.config import Settings
    from gridex.ledger import service as ledger
    from gridex.ledger.models import EntryType
    from gridex.meters.models import Meter, MeterKind, MeterStatus

    settings = Settings(_env_file=None, database_url=database_url, run_jobs=False)  # type: ignore[call-arg]
    rt = build_runtime(settings)
    tag = uuid.uuid4().hex[:8]
    names = [f"bench-{tag}-{i}" for i in range(count)]
    password_hash = rt.hasher.hash(PASSWORD)
    now = rt.clock.now()
    async with rt.db.sessionmaker() as session:
        users = [
            bench_user(
                now,
                username=name,
                email=f"{name}@bench.example.org",
                password_hash=password_hash,
                email_verified_at=now,
                region=REGION,
            )
            for name in names
        ]
        session.add_all(users)
        await session.flush()
        for user in users:
            session.add(
                Meter(
                    serial=f"SM_{user.username.upper().replace('-', '_')}",
                    kind=MeterKind.bidirectional,
                    status=MeterStatus.active,
                    region=REGION,
                    owner_id=user.id,
                    # 10 MW: a client's sells in one epoch stay within what its meter can
                    # export (2,500 kWh per 15-minute epoch), so every order is placed.
                    capacity_w=10_000_000,
                    location={},
                    meter_metadata={},
                    interval_minutes=15,
                    online=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            await ledger.credit(
                session,
                at=now,
                user_id=user.id,
                amount_micros=10**12,
                source=ledger.DEPOSITS,
                type=EntryType.topup,
                description="bench funds",
            )
        await session.commit()
    await rt.db.dispose()
    return names


async def _wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(200):
            try:
                if (await client.get("/health/live")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


def _request(host: str, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def _drive(
    base: str, requests: list[list[bytes]], expect: bytes, seconds: float
) -> tuple[float, list[float]]:
    """One raw keep-alive connection per entry of ``requests``, cycling through its requests.

    A minimal client on asyncio streams (as bench/http_baseline.py): httpx's pool costs more CPU
    per request than the server under test.
    """
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(cycle: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        i = 0
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(cycle[i % len(cycle)])
                i += 1
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if expect not in status_line:
                    raise RuntimeError(f"{status_line!r} {body[:300]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(cycle) for cycle in requests))
    return len(latencies) / (time.perf_counter() - started), latencies


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _order_requests(host: str, token: str, client_index: int) -> list[bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    cycle = []
    for k in range(64):
        side = "buy" if (k + client_index) % 2 == 0 else "sell"
        # Buys below sells: an auction book that does not cross while we measure.
        price = 0.05 + 0.001 * (k % 20) if side == "buy" else 0.5 + 0.001 * (k % 20)
        body = orjson.dumps(
            {"side": side, "type": "limit", "quantity_kwh": 0.1, "limit_price": f"{price:.6f}"}
        )
        cycle.append(_request(host, "POST", "/api/v1/market/orders", headers, body))
    return cycle


async def _measure(
    base: str, usernames: list[str], seconds: float, server_pid: int
) -> tuple[float, float, list[float], float | None]:
    await _wait_up(base)
    host = base.removeprefix("http://")
    tokens = []
    async with httpx.AsyncClient(base_url=base) as client:
        for name in usernames:
            login = await client.post(
                "/api/v1/auth/login", json={"username": name, "password": PASSWORD}
            )
            login.raise_for_status()
            tokens.append(login.json()["access_token"])
    bare = [[_request(host, "GET", "/health/live", {}, b"")] for _ in usernames]
    orders = [_order_requests(host, token, i) for i, token in enumerate(tokens)]
    await _drive(base, bare, b" 200 ", 1.0)  # warm up
    await _drive(base, orders, b" 201 ", 1.0)
    bare_rps, _ = await _drive(base, bare, b" 200 ", seconds)
    cpu_before = _cpu_seconds(server_pid)
    orders_per_s, latencies = await _drive(base, orders, b" 201 ", seconds)
    cpu_after = _cpu_seconds(server_pid)
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and latencies:
        cpu_ms = (cpu_after - cpu_before) * 1000 / len(latencies)
    return bare_rps, orders_per_s, latencies, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gridex-bench-"))
    port = _free_port()
    database_url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or (
        f"sqlite+aiosqlite:///{workdir / 'gridex.db'}"
    )
    env = {
        **os.environ,
        "GRIDEX_DATA_DIR": str(workdir),
        "GRIDEX_DATABASE_URL": database_url,
        "GRIDEX_RATE_LIMIT_ENABLED": "false",
        "GRIDEX_LOG_LEVEL": "WARNING",
        "GRIDEX_RUN_JOBS": "false",
    }
    if database_url.startswith("postgresql"):
        asyncio.run(_prepare_postgres(database_url))  # each run starts from empty tables
    gridex = [sys.executable, "-m", "gridex"]
    subprocess.run(
        [*gridex, "db", "upgrade"], env=env, check=True, cwd=workdir, capture_output=True
    )
    usernames = asyncio.run(_seed(database_url, args.concurrency))
    server = subprocess.Popen(
        [*gridex, "serve", "--port", str(port), "--no-migrate"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        bare_rps, orders_per_s, latencies, cpu_ms = asyncio.run(
            _measure(base, usernames, args.seconds, server.pid)
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        json.dumps(
            {
                "bench": "orders",
                "db": "postgresql" if database_url.startswith("postgresql") else "sqlite",
                "orders_per_s": round(orders_per_s, 1),
                "p50_ms": round(statistics.median(latencies) * 1000, 2),
                "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
                "bare_rps": round(bare_rps, 1),
                "ratio": round(orders_per_s / bare_rps, 3),
                "server_cpu_ms_per_order": None if cpu_ms is None else round(cpu_ms, 2),
                "concurrency": args.concurrency,
                "seconds": args.seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
