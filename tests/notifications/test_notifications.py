"""Notifications: history, unread count, read marks, preferences per event type and channel,
the live push on `user:<id>`, the test endpoint, email through a real SMTP server, and the
notifications of withdrawal decisions."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import timedelta
from email import message_from_bytes
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.mail.models import EmailOutbox
from gridex.mail.service import deliver_pending
from gridex.meters.jobs import mark_offline
from tests.alerts.helpers import notifications_of, run_jobs, send
from tests.factories import API, Account, signed_in
from tests.ledger.helpers import fund
from tests.meters.helpers import NOW, make_meter, reading


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp_server() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    values: dict[str, object] = {"access_token_minutes": 24 * 60}
    if "smtp_server" in request.fixturenames:
        controller, _ = request.getfixturevalue("smtp_server")
        values["smtp_url"] = f"smtp://127.0.0.1:{controller.port}"
    return values


async def offline_alert_for(
    client: httpx.AsyncClient, rt: Runtime, clock: FrozenClock, owner: Account
) -> None:
    """A meter of ``owner`` reports at NOW and goes offline; the jobs run."""
    clock.set(NOW)
    meter = await make_meter(client, owner)
    await send(client, owner, meter, reading(NOW))
    clock.set(NOW + timedelta(minutes=46))
    await mark_offline(rt)
    await run_jobs(rt)


async def unread(client: httpx.AsyncClient, who: Account) -> int:
    response = await client.get(f"{API}/notifications/unread-count", headers=who.headers)
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


async def test_history_unread_count_and_read_marks(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    me = await signed_in(client, runtime)
    other = await signed_in(client, runtime)
    for _ in range(3):
        response = await client.post(
            f"{API}/notifications/test", json={"channels": ["in_app"]}, headers=me.headers
        )
        assert response.status_code == 200, response.text
        clock.advance(timedelta(seconds=1))
    assert await unread(client, me) == 3
    assert await unread(client, other) == 0
    first, second, third = await notifications_of(client, me)  # newest first
    assert first["created_at"] > third["created_at"]

    read = await client.post(f"{API}/notifications/{second['id']}/read", headers=me.headers)
    assert read.status_code == 200
    assert read.json()["read_at"] is not None
    assert await unread(client, me) == 2
    assert [n["id"] for n in await notifications_of(client, me, unread="true")] == [
        first["id"],
        third["id"],
    ]
    # Another user's notification, or none at all: 404, nothing changes.
    for who, nid in ((other, first["id"]), (me, str(uuid.uuid4()))):
        response = await client.post(f"{API}/notifications/{nid}/read", headers=who.headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert await unread(client, me) == 2

    everything = await client.post(f"{API}/notifications/read-all", headers=me.headers)
    assert everything.json() == {"marked": 2}
    assert await unread(client, me) == 0
    anonymous = await client.get(f"{API}/notifications")
    assert anonymous.status_code == 401


async def test_preferences_choose_channels_per_event_type(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    me = await signed_in(client, runtime)
    prefs = await client.get(f"{API}/notifications/preferences", headers=me.headers)
    assert prefs.status_code == 200
    assert prefs.json()["channels"]["device_offline"] == ["email", "in_app", "websocket"]
    assert prefs.json()["channels"]["trade_executed"] == ["in_app", "websocket"]

    bad = await client.put(
        f"{API}/notifications/preferences",
        json={"channels": {"device_offline": ["sms"]}},
        headers=me.headers,
    )
    assert bad.status_code == 422
    unknown = await client.put(
        f"{API}/notifications/preferences",
        json={"channels": {"weather": ["email"]}},
        headers=me.headers,
    )
    assert unknown.status_code == 422

    # Offline meters: nothing at all; every other alert type: the app only.
    put = await client.put(
        f"{API}/notifications/preferences",
        json={"channels": {"device_offline": [], "alert_raised": ["in_app"]}},
        headers=me.headers,
    )
    assert put.status_code == 200, put.text
    assert put.json()["channels"]["device_offline"] == []
    assert put.json()["channels"]["voltage_out_of_range"] == ["in_app"]
    # The same choices as the profile's preferences.
    profile = await client.get(f"{API}/me/preferences", headers=me.headers)
    assert profile.json()["notifications"]["device_offline"] == []

    live = runtime.pubsub.subscribe(f"user:{me.id}")
    await offline_alert_for(client, runtime, clock, me)
    assert await notifications_of(client, me) == []
    assert live.queue.qsize() == 1  # the alert itself (alert_raised), no notification
    assert (await live.get())["type"] == "alert_raised"
    async with runtime.db.sessionmaker() as session:
        assert list(await session.scalars(select(EmailOutbox.kind))) == []

    # Back to email only: an email is queued, nothing stored, nothing pushed.
    await client.put(
        f"{API}/notifications/preferences",
        json={"channels": {"device_offline": ["email"]}},
        headers=me.headers,
    )
    await offline_alert_for(client, runtime, clock, me)
    assert await notifications_of(client, me) == []
    async with runtime.db.sessionmaker() as session:
        [email] = await session.scalars(select(EmailOutbox))
    assert email.kind == "notification:device_offline"
    assert email.to_address == me.email
    await live.close()


async def test_a_notification_is_pushed_on_the_users_channel(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    me = await signed_in(client, runtime)
    live = runtime.pubsub.subscribe(f"user:{me.id}")
    await offline_alert_for(client, runtime, clock, me)
    [stored] = await notifications_of(client, me)
    messages = [await live.get(), await live.get()]
    pushed = next(m for m in messages if m["type"] == "notification")
    assert pushed["channel"] == f"user:{me.id}"
    assert pushed["data"] == stored
    await live.close()


async def test_test_notification_goes_out_by_smtp(
    smtp_server: Any, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    _, inbox = smtp_server
    me = await signed_in(client, runtime)
    response = await client.post(f"{API}/notifications/test", headers=me.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["channels"] == ["email", "in_app", "websocket"]
    assert body["email_queued"] is True
    assert body["notification"]["type"] == "test"
    assert await deliver_pending(runtime.db, runtime.settings, runtime.clock) == 1
    await asyncio.sleep(0.05)
    [message] = inbox.messages
    assert message["To"] == me.email
    assert message["Subject"] == "Gridex: Test notification"
    assert "this channel reaches you" in str(message.get_payload())

    bad = await client.post(
        f"{API}/notifications/test", json={"channels": ["pigeon"]}, headers=me.headers
    )
    assert bad.status_code == 422


async def test_alert_email_goes_out_by_smtp(
    smtp_server: Any, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    _, inbox = smtp_server
    me = await signed_in(client, runtime)
    await offline_alert_for(client, runtime, clock, me)
    assert await deliver_pending(runtime.db, runtime.settings, runtime.clock) == 1
    await asyncio.sleep(0.05)
    [message] = inbox.messages
    assert message["Subject"] == "Gridex: Warning: device offline"
    assert "is offline" in str(message.get_payload())


async def test_withdrawal_decisions_are_notified(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    me = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    await fund(runtime, me.id, 10_000_000)
    ids = []
    for amount in ("2", "3"):
        response = await client.post(
            f"{API}/wallet/withdrawals",
            json={"amount": amount, "destination": "DE89370400440532013000"},
            headers=me.headers,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    approved = await client.post(
        f"{API}/admin/withdrawals/{ids[0]}/approve", headers=operator.headers
    )
    assert approved.status_code == 200, approved.text
    rejected = await client.post(
        f"{API}/admin/withdrawals/{ids[1]}/reject",
        json={"reason": "destination closed"},
        headers=operator.headers,
    )
    assert rejected.status_code == 200, rejected.text
    await run_jobs(runtime)
    await run_jobs(runtime)
    notes = {n["data"]["withdrawal_id"]: n for n in await notifications_of(client, me)}
    assert set(notes) == set(ids)
    assert notes[ids[0]]["data"]["status"] == "approved"
    assert notes[ids[0]]["title"] == "Withdrawal of 2.000000 USD approved"
    assert notes[ids[1]]["body"].endswith("Reason: destination closed")
