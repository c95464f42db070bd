from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from email import message_from_bytes
from typing import Any

import httpx
import pytest
import structlog.testing
from aiosmtpd.controller import Controller
from sqlalchemy import select

from gridex.core.clock import FrozenClock
from gridex.core.jobs import JobRunner
from gridex.core.runtime import Runtime
from gridex.mail.models import EmailOutbox
from gridex.mail.service import deliver_pending
from tests.factories import API


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp_server() -> Any:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    if "smtp_server" in request.fixturenames:
        controller, _ = request.getfixturevalue("smtp_server")
        return {"smtp_url": f"smtp://127.0.0.1:{controller.port}"}
    return {}


async def test_emails_go_out_over_smtp_after_commit(
    smtp_server: Any, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, inbox = smtp_server
    response = await client.post(
        f"{API}/auth/register",
        json={"username": "mailme", "email": "mailme@example.org", "password": "Sunny-Roof-99"},
    )
    assert response.status_code == 201
    async with runtime.db.sessionmaker() as session:
        [queued] = await session.scalars(select(EmailOutbox))
        assert queued.status == "pending"
    sent = await deliver_pending(runtime.db, runtime.settings, runtime.clock)
    assert sent == 1
    await asyncio.sleep(0.05)
    [message] = inbox.messages
    assert message["To"] == "mailme@example.org"
    assert message["Subject"] == "Your Gridex verification code"
    async with runtime.db.sessionmaker() as session:
        [delivered] = await session.scalars(select(EmailOutbox))
        assert delivered.status == "sent"
        assert delivered.sent_at is not None
        # The code went out by mail; it is not kept where an admin or a backup could read it.
        assert delivered.body == ""
        assert "Your code is" in str(message.get_payload())


async def test_smtp_outage_keeps_the_email_for_a_retry(
    runtime: Runtime, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    runtime.settings.smtp_url = f"smtp://127.0.0.1:{_free_port()}"  # nothing listens there
    await client.post(
        f"{API}/auth/register",
        json={"username": "later", "email": "later@example.org", "password": "Sunny-Roof-99"},
    )
    assert await deliver_pending(runtime.db, runtime.settings, runtime.clock) == 0
    async with runtime.db.sessionmaker() as session:
        [email] = await session.scalars(select(EmailOutbox))
        assert email.status == "pending"
        assert email.attempts == 1
        assert email.last_error
        assert email.next_attempt_at is not None
        assert email.next_attempt_at > clock.now()


async def test_one_leader_per_job(runtime: Runtime, clock: FrozenClock) -> None:
    runs: list[str] = []
    first, second = JobRunner(runtime.db, clock), JobRunner(runtime.db, clock)

    async def work() -> None:
        runs.append("ran")

    first.add("demo", work, every_seconds=10)
    second.add("demo", work, every_seconds=10)
    assert await first.run_once(first.jobs[0]) is True
    assert await second.run_once(second.jobs[0]) is False
    assert await first.run_once(first.jobs[0]) is True  # the holder renews its lease
    clock.advance(timedelta(seconds=31))  # the lease (3 intervals, at least 30 s) lapses
    assert await second.run_once(second.jobs[0]) is True
    assert await first.run_once(first.jobs[0]) is False
    assert runs == ["ran", "ran", "ran"]


async def test_the_log_says_which_process_runs_which_job(
    runtime: Runtime, clock: FrozenClock
) -> None:
    first, second = JobRunner(runtime.db, clock), JobRunner(runtime.db, clock)

    async def work() -> None:
        return None

    for runner in (first, second):
        runner.add("clearing", work, every_seconds=10)
    with structlog.testing.capture_logs() as logs:
        await first.run_once(first.jobs[0])
        await first.run_once(first.jobs[0])
        await second.run_once(second.jobs[0])
        clock.advance(timedelta(seconds=31))
        await second.run_once(second.jobs[0])
        await first.run_once(first.jobs[0])
    leases = [(e["event"], e["holder"]) for e in logs if e["event"].startswith("job_lease")]
    assert leases == [
        ("job_lease_taken", first.holder),
        ("job_lease_taken", second.holder),
        ("job_lease_lost", first.holder),
    ]
    ran = [e for e in logs if e["event"] == "job_ran"]
    assert [e["holder"] for e in ran] == [first.holder, first.holder, second.holder]
    assert all(e["job"] == "clearing" and e["duration_ms"] >= 0 for e in ran)
