"""Ingest throughput: ``POST /readings/batch`` against a raw bulk insert of the same rows.

Starts ``gridex serve`` (``--workers``, a fresh SQLite database, or the PostgreSQL database of
GRIDEX_BENCH_DATABASE_URL with its schema dropped and created again, so runs do not add up),
registers meters and an API key with ``readings:write``, then ``--clients`` concurrent clients
each send one untimed warm-up call and ``--batches`` timed calls of 10,000 readings (each client
writes its own meters, as head-ends partitioned by meter do). Bodies are serialised before the
clock starts.

In the same run, every stored reading is read back, the table emptied, and the same rows
inserted again with the fastest plain method of the backend: PostgreSQL ``COPY``, SQLite
``executemany`` in one transaction (raw: no validation, no rollups, no meter updates).
``ratio`` = api / raw. With ``--mqtt URL`` a second line measures messages/s through the broker
into the store (``gridex`` consuming with a shared subscription), and how many were lost.

    .venv/bin/python bench/ingest.py [--clients 4] [--batches 3] [--workers 2] [--mqtt mqtt://127.0.0.1:1883]
                                     [--no-mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ledger import _prepare_postgres  # noqa: E402
from gridex.core.db import Database  # noqa: E402

PASSWORD = "Bench-Password-2025"
PER_CALL = 10_000
METERS_PER_CLIENT = 20
COLUMNS = (
    "meter_id",
    "timestamp",
    "interval_minutes",
    "consumed_wh",
    "produced_wh",
    "peak_demand_w",
    "power_factor",
    "voltage",
    "current",
    "frequency",
    "metadata",
    "signature",
    "source",
    "received_at",
    "revision",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def _wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(300):
            try:
                if (await client.get("/health/live")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


async def _setup(base: str, username: str, meters: int) -> tuple[dict[str, str], list[str]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        login.raise_for_status()
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        key = await client.post(
            "/api/v1/me/api-keys",
            json={"name": "bench", "scopes": ["readings:write"]},
            headers=auth,
        )
        key.raise_for_status()
        serials = []
        tag = uuid.uuid4().hex[:6].upper()
        for i in range(meters):
            serial = f"BENCH_{tag}_{i:04d}"
            response = await client.post(
                "/api/v1/meters",
                json={"serial": serial, "region": "bench", "capacity_kw": 100},
                headers=auth,
            )
            response.raise_for_status()
            serials.append(serial)
        return {"X-API-Key": key.json()["key"], "Content-Type": "application/json"}, serials


def _bodies(serials: list[str], batches: int, end: datetime) -> list[bytes]:
    """``batches`` bodies of 10,000 readings over ``serials``, disjoint in time."""
    per_meter = PER_CALL // len(serials)
    bodies = []
    for b in range(batches):
        items = []
        for serial in serials:
            for i in range(per_meter):
                ts = end - timedelta(minutes=15 * (b * per_meter + i))
                items.append(
                    {
                        "meter_serial": serial,
                        "timestamp": _iso(ts),
                        "energy_consumed_kwh": ((i * 7) % 900) / 1000,
                        "energy_produced_kwh": ((i * 3) % 400) / 1000,
                        "voltage": 230.0,
                    }
                )
        bodies.append(orjson.dumps({"readings": items}))
    return bodies


async def _drive(base: str, headers: dict[str, str], per_client: list[list[bytes]]) -> float:
    async def client_run(bodies: list[bytes]) -> int:
        accepted = 0
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            for body in bodies:
                response = await client.post(
                    "/api/v1/readings/batch", content=body, headers=headers
                )
                response.raise_for_status()
                result = response.json()
                if result["rejected"]:
                    raise RuntimeError(f"rejected readings: {result['rejected'][:3]}")
                accepted += result["accepted"]
        return accepted

    # One untimed call per client first: every worker connection has prepared its statements
    # and planned them, as in a steady stream from head-ends.
    await asyncio.gather(*(client_run(b[:1]) for b in per_client))
    started = time.perf_counter()
    counts = await asyncio.gather(*(client_run(b[1:]) for b in per_client))
    elapsed = time.perf_counter() - started
    return sum(counts) / elapsed


async def _raw_insert(url: str) -> tuple[float, int]:
    """Read every stored reading, empty the table, and insert the same rows again."""
    db = Database(url)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT {', '.join(COLUMNS)} FROM meter_readings"))).all()
        await conn.execute(text("DELETE FROM meter_readings"))
        await conn.commit()
    values = [tuple(r) for r in rows]
    if db.is_sqlite:
        async with db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            placeholders = ", ".join("?" for _ in COLUMNS)
            sql = f"INSERT INTO meter_readings ({', '.join(COLUMNS)}) VALUES ({placeholders})"
            started = time.perf_counter()
            await driver.executemany(sql, values)
            await driver.commit()
            elapsed = time.perf_counter() - started
    else:
        async with db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            started = time.perf_counter()
            await driver.copy_records_to_table("meter_readings", records=values, columns=COLUMNS)
            elapsed = time.perf_counter() - started
            await conn.commit()
    await db.dispose()
    return len(values) / elapsed, len(values)


async def _mqtt_bench(
    mqtt_url: str, base: str, db_url: str, serial: str, messages: int
) -> dict[str, Any]:
    """Publish ``messages`` QoS 1 readings for one meter and wait until all are stored."""
    import aiomqtt

    url = urlsplit(mqtt_url)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    payloads = [
        orjson.dumps(
            {
                "timestamp": _iso(end - timedelta(minutes=i)),
                "energy_consumed_kwh": 0.01,
                "energy_produced_kwh": 0.0,
                "interval_minutes": 1,
            }
        )
        for i in range(messages)
    ]
    db = Database(db_url)

    async def stored() -> int:
        async with db.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM meter_readings r JOIN meters m "
                            "ON m.id = r.meter_id WHERE m.serial = :s"
                        ),
                        {"s": serial},
                    )
                ).scalar_one()
            )

    started = time.perf_counter()
    async with aiomqtt.Client(
        url.hostname or "127.0.0.1",
        url.port or 1883,
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=1000,
    ) as client:
        await asyncio.gather(
            *(client.publish(f"gridex/meters/{serial}/readings", p, qos=1) for p in payloads)
        )
    count = 0
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        count = await stored()
        if count >= messages:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await db.dispose()
    return {
        "bench": "ingest_mqtt",
        "messages_per_s": round(count / elapsed, 1),
        "lost": messages - count,
        "messages": messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mqtt", default=os.environ.get("GRIDEX_BENCH_MQTT_URL"))
    parser.add_argument("--mqtt-messages", type=int, default=5000)
    parser.add_argument(
        "--no-mqtt", action="store_true", help="skip the MQTT line (also when the env sets a URL)"
    )
    args = parser.parse_args()
    if args.no_mqtt:
        args.mqtt = None

    workdir = Path(tempfile.mkdtemp(prefix="gridex-bench-"))
    port = _free_port()
    db_url = os.environ.get("GRIDEX_BENCH_DATABASE_URL") or (
        f"sqlite+aiosqlite:///{workdir / 'gridex.db'}"
    )
    env = {
        **os.environ,
        "GRIDEX_DATA_DIR": str(workdir),
        "GRIDEX_DATABASE_URL": db_url,
        "GRIDEX_RATE_LIMIT_ENABLED": "false",
        "GRIDEX_REGIONS": "bench",  # the region its meters name (created on start)
        "GRIDEX_LOG_LEVEL": "WARNING",
        "GRIDEX_RUN_JOBS": "false",
        "GRIDEX_MQTT_CLIENT_ID": "gridex-bench-{pid}",
        "GRIDEX_MQTT_SHARED_GROUP": f"bench{os.getpid()}",
    }
    if args.mqtt:
        env["GRIDEX_MQTT_URL"] = args.mqtt
    else:
        env.pop("GRIDEX_MQTT_URL", None)
    if db_url.startswith("postgresql"):
        asyncio.run(_prepare_postgres(db_url))  # each run measures its own rows
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
            "operator",
        ],
        env=env,
        check=True,
        cwd=workdir,
        capture_output=True,
    )
    server = subprocess.Popen(
        [*gridex, "serve", "--port", str(port), "--no-migrate", "--workers", str(args.workers)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        async def run() -> tuple[float, dict[str, Any] | None, str]:
            await _wait_up(base)
            headers, serials = await _setup(base, username, args.clients * METERS_PER_CLIENT + 1)
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            per_client = [
                _bodies(
                    serials[c * METERS_PER_CLIENT : (c + 1) * METERS_PER_CLIENT],
                    args.batches + 1,  # the first is the warm-up call
                    end,
                )
                for c in range(args.clients)
            ]
            api = await _drive(base, headers, per_client)
            mqtt = None
            if args.mqtt:
                await asyncio.sleep(1.0)  # the consumers subscribe at start-up
                mqtt = await _mqtt_bench(args.mqtt, base, db_url, serials[-1], args.mqtt_messages)
            return api, mqtt, serials[-1]

        api_rate, mqtt_line, _ = asyncio.run(run())
    finally:
        server.terminate()
        server.wait(timeout=20)
    raw_rate, rows = asyncio.run(_raw_insert(db_url))
    print(
        json.dumps(
            {
                "bench": "ingest",
                "db": "postgresql" if db_url.startswith("postgresql") else "sqlite",
                "api_readings_per_s": round(api_rate, 1),
                "raw_readings_per_s": round(raw_rate, 1),
                "ratio": round(api_rate / raw_rate, 3),
                "readings": rows,
                "clients": args.clients,
                "per_call": PER_CALL,
                "workers": args.workers,
            }
        )
    )
    if mqtt_line is not None:
        print(json.dumps(mqtt_line))


if __name__ == "__main__":
    main()
