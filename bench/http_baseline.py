"""HTTP baseline: a bare endpoint against an authenticated ``GET /api/v1/me``, over real sockets.

Starts ``gridex serve`` (one worker, a fresh SQLite database unless GRIDEX_BENCH_DATABASE_URL is
set), signs a user in, then drives each endpoint with concurrent keep-alive clients for a fixed
time. The bare endpoint (``/health/live``: routing, middleware, no database) is the stack's limit in
the same run; ``ratio`` is ``me_rps / bare_rps``. Prints one JSON line.

    .venv/bin/python bench/http_baseline.py [--seconds 5] [--concurrency 32]
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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Bench-Password-2025"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


async def _drive(
    base: str, path: str, headers: dict[str, str], seconds: float, concurrency: int
) -> tuple[float, list[float]]:
    """Keep-alive HTTP/1.1 GETs from ``concurrency`` raw connections for ``seconds``.

    A minimal client on asyncio streams: httpx's pool costs more CPU per request than the server
    under test, and on two cores it would measure itself.
    """
    host, port = base.removeprefix("http://").split(":")
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (head + "\r\n").encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if b" 200 " not in status_line:
                    raise RuntimeError(f"{path}: {status_line!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(
    base: str, username: str, seconds: float, concurrency: int
) -> tuple[float, float, list[float]]:
    await _wait_up(base)
    async with httpx.AsyncClient(base_url=base) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        login.raise_for_status()
        token = login.json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    # Warm up both paths, then measure.
    await _drive(base, "/health/live", {}, 1.0, concurrency)
    await _drive(base, "/api/v1/me", auth, 1.0, concurrency)
    bare_rps, _ = await _drive(base, "/health/live", {}, seconds, concurrency)
    me_rps, latencies = await _drive(base, "/api/v1/me", auth, seconds, concurrency)
    return bare_rps, me_rps, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gridex-bench-"))
    port = _free_port()
    env = {
        **os.environ,
        "GRIDEX_DATA_DIR": str(workdir),
        "GRIDEX_RATE_LIMIT_ENABLED": "false",
        "GRIDEX_LOG_LEVEL": "WARNING",
        "GRIDEX_RUN_JOBS": "false",
    }
    if os.environ.get("GRIDEX_BENCH_DATABASE_URL"):
        env["GRIDEX_DATABASE_URL"] = os.environ["GRIDEX_BENCH_DATABASE_URL"]
    gridex = [sys.executable, "-m", "gridex"]
    username = f"bench{os.getpid()}"
    subprocess.run(
        [*gridex, "db", "upgrade"], env=env, check=True, cwd=workdir, capture_output=True
    )
    subprocess.run(
        [
            *gridex,
            "admin",
            "create-user",
            "--username",
            username,
            "--email",
            f"{username}@bench.example.org",
            "--password",
            PASSWORD,
            "--role",
            "prosumer",
        ],
        env=env,
        check=True,
        cwd=workdir,
        capture_output=True,
    )
    server = subprocess.Popen(
        [*gridex, "serve", "--port", str(port), "--no-migrate"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        bare_rps, me_rps, latencies = asyncio.run(
            _measure(base, username, args.seconds, args.concurrency)
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        json.dumps(
            {
                "bench": "http",
                "bare_rps": round(bare_rps, 1),
                "me_rps": round(me_rps, 1),
                "p50_ms": round(statistics.median(latencies) * 1000, 2),
                "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
                "ratio": round(me_rps / bare_rps, 3),
                "concurrency": args.concurrency,
                "seconds": args.seconds,
                "db": "postgresql" if "GRIDEX_BENCH_DATABASE_URL" in os.environ else "sqlite",
            }
        )
    )


if __name__ == "__main__":
    main()
