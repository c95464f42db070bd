"""Typed helpers for the alerts and notifications tests."""

from __future__ import annotations

from typing import Any

import httpx

from gridex.alerts.jobs import evaluate
from gridex.core.runtime import Runtime
from gridex.notifications.jobs import notify_facts
from tests.factories import API, Account


async def run_jobs(rt: Runtime) -> None:
    """One run of the alerts job and of the notifications job, as the scheduler would."""
    await evaluate(rt)
    await notify_facts(rt)


async def alerts_of(
    client: httpx.AsyncClient, account: Account, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{API}/alerts", params={"per_page": 100, **params}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def notifications_of(
    client: httpx.AsyncClient, account: Account, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{API}/notifications", params={"per_page": 100, **params}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def send(
    client: httpx.AsyncClient, account: Account, meter: dict[str, Any], *readings: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/meters/{meter['id']}/readings",
        json={"readings": list(readings)},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
