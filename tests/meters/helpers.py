"""Typed helpers for the meters tests: meters, keys, readings and signing devices."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import base58
import httpx
from nacl.signing import SigningKey

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from tests.factories import API, Account, signed_in

# A fixed, quarter-aligned "now" keeps bucket arithmetic readable in assertions.
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def at_now(clock: FrozenClock) -> datetime:
    clock.set(NOW)
    return NOW


async def make_meter(client: httpx.AsyncClient, account: Account, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "serial": f"SM_{uuid.uuid4().hex[:10].upper()}",
        "kind": "bidirectional",
        "region": "north",
        "capacity_kw": 10,
    }
    body.update(fields)
    response = await client.post(f"{API}/meters", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    meter: dict[str, Any] = response.json()
    return meter


async def make_key(
    client: httpx.AsyncClient,
    account: Account,
    scopes: list[str],
    meter_id: str | None = None,
) -> dict[str, str]:
    body: dict[str, Any] = {"name": "device", "scopes": scopes}
    if meter_id is not None:
        body["meter_id"] = meter_id
    response = await client.post(f"{API}/me/api-keys", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


def reading(
    end: datetime, consumed: float = 0.5, produced: float = 0.0, **extra: Any
) -> dict[str, Any]:
    return {
        "timestamp": utc_iso(end),
        "energy_consumed_kwh": consumed,
        "energy_produced_kwh": produced,
        **extra,
    }


def quarters(start: datetime, count: int) -> list[datetime]:
    """``count`` consecutive interval ends, 15 minutes apart, from ``start``."""
    return [start + timedelta(minutes=15 * i) for i in range(count)]


class Device:
    """A meter's Ed25519 key: signs readings as docs/devices.md describes."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.public_key = base58.b58encode(bytes(self.key.verify_key)).decode()

    def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in payload.items() if k != "signature"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        signature = self.key.sign(canonical.encode()).signature
        return {**body, "signature": base58.b58encode(signature).decode()}


async def four_quarters(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> tuple[Account, Account, dict[str, Any], list[datetime]]:
    """An owner, an operator, and the owner's meter with four 15-minute readings of 0.5 kWh
    consumed and 0.1 kWh produced ending at NOW, NOW - 15 min, ... (the ends, newest first)."""
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    operator = await signed_in(client, runtime, Role.operator)
    meter = await make_meter(client, owner)
    ends = [NOW - timedelta(minutes=15 * i) for i in range(4)]
    stored = await client.post(
        f"{API}/meters/{meter['id']}/readings",
        json={"readings": [reading(t, 0.5, 0.1) for t in ends]},
        headers=owner.headers,
    )
    assert stored.json()["accepted"] == 4, stored.text
    return owner, operator, meter, ends
