"""WebSocket fan-out: 1k, 5k and 10k clients on one worker, against raw ``websockets``.

For each client count, two servers get the same clients in turn:

- ``raw``: a bare ``websockets`` server that sends each event with ``websockets.broadcast``
  (no auth, no channels, no queues): the floor of this machine and library;
- ``gridex``: the app on uvicorn (one worker), each client signed in with its own session's
  access token and subscribed to ``market``; events are published on the process's pub/sub, the
  way a clearing publishes them, and reach the sockets through the hub.

Clients run in separate processes (asyncio protocols on ``websockets``' sans-I/O client, light
enough that the server, not the clients, is what is measured). Per count it prints one line:
``{"bench": "ws", "connections", "bytes_per_connection", "deliveries_per_s",
"raw_deliveries_per_s", "ratio", "p50_ms", "p95_ms"}``: connections held, the server's resident
memory per connection, deliveries per second of a burst of events (from the first publish to the
last client receiving the last event), and the event-to-client latency of events paced at 10/s.

    python bench/ws.py [--counts 1000,5000,10000] [--burst 50] [--paced 20]

A second line per count on stderr gives the floor's own latency and memory, and the server CPU
time per delivery of both servers (a figure the machine's other load disturbs least).
``BENCH_WS_PROFILE=<file>`` writes a cProfile of the gridex server to ``<file>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-key-that-is-long-enough-for-production-checks"
CLIENT_PROCESSES = 4
# Replies on a subprocess's stdout start with this (a log line may share the stream).
REPLY = "@@"


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _event(seq: int, phase: str) -> dict[str, Any]:
    """A market event shaped like ``trade_executed``; ``sent`` is the publisher's clock."""
    now = datetime.now(UTC)
    return {
        "id": str(uuid.uuid4()),
        "region": "bench",
        "epoch": now.replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z"),
        "quantity_kwh": 1.25,
        "price": "0.123000",
        "executed_at": now.isoformat().replace("+00:00", "Z"),
        "seq": seq,
        "phase": phase,
        "sent": time.monotonic(),
    }


# --- servers (subprocesses, driven by lines on stdin) -------------------------------------------


async def _control(publish: Any) -> None:
    """Read commands: ``burst N`` publishes N events back to back, ``paced N`` N events 100 ms
    apart; each answers one JSON line on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command, count = line.split()
        t0 = time.monotonic()
        for seq in range(int(count)):
            await publish(_event(seq, command))
            if command == "paced":
                await asyncio.sleep(0.1)
        sys.stdout.write(REPLY + json.dumps({"t0": t0}) + "\n")
        sys.stdout.flush()


async def _serve_raw(port: int) -> None:
    import orjson
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def publish(data: dict[str, Any]) -> None:
        text = orjson.dumps(
            {"type": "trade_executed", "data": data, "ts": data["executed_at"], "channel": "market"}
        ).decode()
        broadcast(clients, text)
        await asyncio.sleep(0)

    async with serve(handler, "127.0.0.1", port, compression=None, backlog=4096):
        sys.stdout.write(REPLY + "{}\n")
        sys.stdout.flush()
        await _control(publish)


async def _serve_gridex(port: int, database_url: str) -> None:
    import uvicorn

    from gridex.app import build_runtime, create_app, prepare
    from gridex.core.config import Settings
    from gridex.core.pubsub import message

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        secret_key=SECRET,
        database_url=database_url,
        run_jobs=False,
        rate_limit_enabled=False,
        chain="off",
        log_level="WARNING",
        regions=["bench"],
    )
    rt = build_runtime(settings)
    await prepare(rt)
    config = uvicorn.Config(
        create_app(runtime=rt),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        backlog=4096,
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes only this flag)
        await asyncio.sleep(0.05)

    async def publish(data: dict[str, Any]) -> None:
        await rt.pubsub.publish("market", message("trade_executed", data, datetime.now(UTC)))
        await asyncio.sleep(0)

    sys.stdout.write(REPLY + "{}\n")
    sys.stdout.flush()
    await _control(publish)
    server.should_exit = True
    await task


# --- clients (subprocesses) ------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One WebSocket client on the sans-I/O protocol: counts events, notes their latency."""

    def __init__(self, stats: dict[str, Any], uri: str, subscribe: bool) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.stats = stats
        self.protocol = ClientProtocol(parse_uri(uri))
        self.request = self.protocol.connect()
        self.subscribe = subscribe
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.protocol.send_request(self.request)
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        import orjson
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        self.protocol.receive_data(data)
        stats = self.stats
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if not self.subscribe:
                    self.ready.set_result(None)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                body = orjson.loads(event.data)
                kind = body["type"]
                if kind == "trade_executed":
                    now = time.monotonic()
                    item = body["data"]
                    stats["count"] += 1
                    stats["last"] = max(stats["last"], now)
                    if item["phase"] == "paced":
                        stats["latency"].append((now - item["sent"]) * 1000)
                elif kind == "welcome":
                    self.protocol.send_text(b'{"op": "subscribe", "channel": "market"}')
                elif kind == "subscribed" and not self.ready.done():
                    self.ready.set_result(None)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats["lost"] += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before it was ready"))


async def _clients(port: int, tokens: list[str]) -> None:
    loop = asyncio.get_running_loop()
    stats: dict[str, Any] = {"count": 0, "last": 0.0, "latency": [], "lost": 0}
    gate = asyncio.Semaphore(64)
    held = []

    async def one(token: str) -> None:
        query = f"?token={token}" if token else ""
        async with gate:
            _, proto = await loop.create_connection(
                lambda: _Client(stats, f"ws://127.0.0.1:{port}/ws{query}", bool(token)),
                "127.0.0.1",
                port,
            )
            held.append(proto)
            await proto.ready

    await asyncio.gather(*(one(t) for t in tokens))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write(REPLY + json.dumps({"ready": len(held)}) + "\n")
    sys.stdout.flush()
    while line := (await reader.readline()).decode().strip():
        if line == "reset":
            stats.update(count=0, last=0.0, latency=[])
            sys.stdout.write(REPLY + "{}\n")
        else:  # report
            report = {k: stats[k] for k in ("count", "last", "latency")}
            sys.stdout.write(REPLY + json.dumps(report) + "\n")
        sys.stdout.flush()
    for proto in held:
        if proto.transport is not None:
            proto.transport.close()


# --- the driver ------------------------------------------------------------------------------


def _reply(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.pid} ended")
        if line.startswith(REPLY):
            answer: dict[str, Any] = json.loads(line[len(REPLY) :])
            return answer


def _ask(proc: subprocess.Popen[str], line: str) -> dict[str, Any]:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return _reply(proc)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


async def _seed(database_url: str, count: int) -> list[str]:
    """``count`` users, each with one session and an access token valid for an hour."""
    from bench.ledger import bench_user
    from gridex.auth.models import AuthSession
    from gridex.core.config import Settings
    from gridex.core.db import Database
    from gridex.core.migrate import upgrade
    from gridex.core.security import AccessClaims, encode_access_token

    await asyncio.to_thread(upgrade, database_url)
    Settings(_env_file=None, database_url=database_url)  # type: ignore[call-arg]
    db = Database(database_url)
    now = datetime.now(UTC)
    tokens = []
    async with db.sessionmaker() as session:
        users = [bench_user(now) for _ in range(count)]
        session.add_all(users)
        await session.flush()
        for user in users:
            sid = uuid.uuid4()
            session.add(
                AuthSession(
                    id=sid,
                    user_id=user.id,
                    method="password",
                    created_at=now,
                    expires_at=now + timedelta(days=1),
                )
            )
            claims = AccessClaims(
                user_id=user.id,
                session_id=sid,
                role=user.role.value,
                jti=uuid.uuid4().hex,
                issued_at=now,
                expires_at=now + timedelta(hours=1),
            )
            tokens.append(encode_access_token(claims, SECRET))
        await session.commit()
    await db.dispose()
    return tokens


def _measure(
    server: subprocess.Popen[str], tokens: list[str], port: int, burst: int, paced: int
) -> dict[str, Any]:
    """Connect the clients, then one warm-up burst, the measured burst and the paced events."""
    per = -(-len(tokens) // CLIENT_PROCESSES)
    rss_before = _rss_bytes(server.pid)
    lists = []
    for i in range(0, len(tokens), per):
        path = Path(tempfile.mkstemp(prefix="gridex-bench-ws-", suffix=".json")[1])
        path.write_text(json.dumps(tokens[i : i + per]))
        lists.append(path)
    clients = [_spawn("--clients", str(port), str(path)) for path in lists]
    try:
        held = sum(_reply(proc)["ready"] for proc in clients)
        time.sleep(0.5)
        per_connection = (_rss_bytes(server.pid) - rss_before) / held
        results = {}
        for phase, count in (("burst", 5), ("burst", burst), ("paced", paced)):
            for proc in clients:
                _ask(proc, "reset")
            cpu0 = _cpu_seconds(server.pid)
            t0 = _ask(server, f"{phase} {count}")["t0"]
            expected = count * held
            deadline = time.monotonic() + 120
            while True:
                reports = [_ask(proc, "report") for proc in clients]
                got = sum(r["count"] for r in reports)
                if got >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            last = max(r["last"] for r in reports)
            cpu = _cpu_seconds(server.pid) - cpu0
            results[phase] = {
                "cpu_us": cpu * 1e6 / max(got, 1),
                "deliveries": got,
                "expected": expected,
                "seconds": last - t0,
                "latency": sorted(x for r in reports for x in r["latency"]),
            }
        burst_result = results["burst"]
        latency = results["paced"]["latency"]
        return {
            "connections": held,
            "bytes_per_connection": round(per_connection),
            "deliveries_per_s": burst_result["deliveries"] / burst_result["seconds"],
            "complete": burst_result["deliveries"] == burst_result["expected"]
            and results["paced"]["deliveries"] == results["paced"]["expected"],
            "p50_ms": latency[len(latency) // 2] if latency else None,
            "p95_ms": latency[int(len(latency) * 0.95)] if latency else None,
            "cpu_us_per_delivery": round(burst_result["cpu_us"], 1),
        }
    finally:
        for proc in clients:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in clients:
            proc.wait(timeout=60)
        for path in lists:
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1000,5000,10000")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--paced", type=int, default=20)
    args = parser.parse_args()
    _raise_file_limit()
    counts = [int(c) for c in args.counts.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="gridex-bench-ws-"))
    database_url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or (
        f"sqlite+aiosqlite:///{workdir / 'gridex.db'}"
    )
    if database_url.startswith("postgresql"):
        from bench.ledger import _prepare_postgres

        asyncio.run(_prepare_postgres(database_url))
    tokens = asyncio.run(_seed(database_url, max(counts)))
    for count in counts:
        measured = {}
        for kind in ("raw", "gridex"):
            port = _free_port()
            server = (
                _spawn("--serve-raw", str(port))
                if kind == "raw"
                else _spawn("--serve-gridex", str(port), database_url)
            )
            try:
                _reply(server)
                who = [""] * count if kind == "raw" else tokens[:count]
                measured[kind] = _measure(server, who, port, args.burst, args.paced)
            finally:
                assert server.stdin is not None
                server.stdin.close()
                server.wait(timeout=60)
        ours, raw = measured["gridex"], measured["raw"]
        line = {
            "bench": "ws",
            "connections": ours["connections"],
            "bytes_per_connection": ours["bytes_per_connection"],
            "deliveries_per_s": round(ours["deliveries_per_s"]),
            "raw_deliveries_per_s": round(raw["deliveries_per_s"]),
            "ratio": round(ours["deliveries_per_s"] / raw["deliveries_per_s"], 3),
            "p50_ms": round(ours["p50_ms"], 2) if ours["p50_ms"] is not None else None,
            "p95_ms": round(ours["p95_ms"], 2) if ours["p95_ms"] is not None else None,
        }
        if not (ours["complete"] and raw["complete"]):
            line["incomplete"] = True
        print(json.dumps(line), flush=True)
        # The floor's own figures, for reading the line above (stderr: one JSON line on stdout).
        floor = {
            "connections": count,
            "raw_p50_ms": raw["p50_ms"] and round(raw["p50_ms"], 2),
            "raw_p95_ms": raw["p95_ms"] and round(raw["p95_ms"], 2),
            "raw_bytes_per_connection": raw["bytes_per_connection"],
            "server_cpu_us_per_delivery": ours["cpu_us_per_delivery"],
            "raw_server_cpu_us_per_delivery": raw["cpu_us_per_delivery"],
        }
        print(json.dumps(floor), file=sys.stderr, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] in (["--serve-raw"], ["--serve-gridex"], ["--clients"]):
        _raise_file_limit()
        mode = sys.argv[1]
        if mode == "--serve-raw":
            asyncio.run(_serve_raw(int(sys.argv[2])))
        elif mode == "--serve-gridex" and os.environ.get("BENCH_WS_PROFILE"):
            import cProfile

            cProfile.run(
                "asyncio.run(_serve_gridex(int(sys.argv[2]), sys.argv[3]))",
                os.environ["BENCH_WS_PROFILE"],
            )
        elif mode == "--serve-gridex":
            asyncio.run(_serve_gridex(int(sys.argv[2]), sys.argv[3]))
        else:
            asyncio.run(_clients(int(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())))
    else:
        main()
