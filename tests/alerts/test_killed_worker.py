"""A worker process killed (``os._exit``, as SIGKILL leaves it) right after committing a meter's
offline transition, before its Redis publish goes out: no event reaches anyone, and the
alert still appears from the committed row."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from gridex.alerts.jobs import evaluate
from gridex.core.clock import FrozenClock
from gridex.core.pubsub import RedisPubSub
from gridex.core.runtime import Runtime
from tests.alerts.helpers import alerts_of, send
from tests.factories import signed_in
from tests.market.test_events import nothing_within
from tests.meters.helpers import NOW, make_meter, reading

ROOT = Path(__file__).resolve().parents[2]

# The liveness job in a worker of its own, sharing the test's database and a real Redis; the
# process dies in the first after-commit hook that runs after the publish was handed to Redis
# (a task on the event loop that never gets to run).
WORKER = """
import asyncio, os, sys
from datetime import datetime
from sqlalchemy import event
from sqlalchemy.orm import Session
from gridex.app import build_runtime
from gridex.core.clock import FrozenClock
from gridex.meters.jobs import mark_offline
from tests.conftest import make_settings

database_url, redis_url, now = sys.argv[1:4]

@event.listens_for(Session, "after_commit")
def killed(session):
    os._exit(9)

async def main():
    rt = build_runtime(
        make_settings(database_url, redis_url=redis_url), FrozenClock(datetime.fromisoformat(now))
    )
    await mark_offline(rt)
    await rt.pubsub.flush()  # a worker that lived would publish here

asyncio.run(main())
"""


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"access_token_minutes": 24 * 60}


async def test_a_killed_worker_loses_the_event_but_not_the_alert(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    redis_url = os.environ.get("GRIDEX_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("GRIDEX_TEST_REDIS_URL is not set")
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    meter = await make_meter(client, owner)
    await send(client, owner, meter, reading(NOW))

    redis = RedisPubSub(redis_url)
    live = redis.subscribe(f"meter:{meter['id']}")
    await live.__aenter__()
    offline_at = NOW + timedelta(minutes=46)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        runtime.settings.database_url,
        redis_url,
        offline_at.isoformat(),
        cwd=ROOT,
    )
    assert await worker.wait() == 9
    assert await nothing_within(live, 0.5)  # the device_offline event died with the worker
    await live.close()
    await redis.close()

    clock.set(offline_at)
    await evaluate(runtime)
    [alert] = await alerts_of(client, owner)
    assert (alert["type"], alert["status"]) == ("device_offline", "open")
    assert alert["details"]["offline_at"] == "2026-03-04T12:46:00Z"
