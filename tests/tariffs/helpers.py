"""Helpers of the tariffs' HTTP tests: a region in a time zone and the demo-like tariff."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from gridex.core.runtime import Runtime
from gridex.regions.service import create_region
from tests.factories import API, Account

# Base 0.30, weekday evening peak 17:00-21:00 at 0.42, night 22:00-06:00 at 0.20, feed-in 0.08.
TARIFF: dict[str, Any] = {
    "import_price": "0.30",
    "export_price": "0.08",
    "time_of_use": [
        {
            "name": "peak",
            "start": "17:00",
            "end": "21:00",
            "import_price": "0.42",
            "days": "weekday",
        },
        {"start": "22:00", "end": "06:00", "import_price": 0.2},
    ],
}


async def zoned_region(rt: Runtime, timezone: str = "Europe/Berlin") -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    async with rt.db.sessionmaker() as session:
        await create_region(session, name, at=rt.clock.now(), timezone=timezone)
        await session.commit()
    return name


async def create_tariff(
    client: httpx.AsyncClient, admin: Account, region: str, expect: int = 201, **fields: Any
) -> dict[str, Any]:
    body = {**TARIFF, "region": region, **fields}
    response = await client.post(f"{API}/tariffs", json=body, headers=admin.headers)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def current(
    client: httpx.AsyncClient, account: Account, region: str, at: str | None = None
) -> dict[str, Any]:
    params = {"at": at} if at else {}
    response = await client.get(
        f"{API}/tariffs/current/{region}", params=params, headers=account.headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
