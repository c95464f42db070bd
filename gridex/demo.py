"""The demo community's activity, so that a fresh `make run` shows a working market.

Created once, through the same service functions the API calls (so every rule applies): one meter
per person, a week of 15-minute readings (rooftop solar for the prosumers, household load for
everyone), wallet top-ups through the development payment path, a revenue-share installation on
Bob's roof with Erin as investor, and resting orders in the next open epoch. The readings are
generated from a fixed seed: the same every time, plausible rather than real.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.service import Principal
from gridex.core.runtime import Runtime
from gridex.ledger.installations import create_installation
from gridex.ledger.schemas import InstallationIn
from gridex.market.schemas import OrderIn
from gridex.market.service import place_order
from gridex.meters.models import Meter, MeterKind
from gridex.meters.schemas import MeterIn
from gridex.meters.service import ingest_for_meter, register_meter
from gridex.payments.schemas import TopupIn
from gridex.payments.service import complete_intent, create_topup
from gridex.users.bootstrap import DEMO_REGION
from gridex.users.models import User

HISTORY_DAYS = 7
INTERVAL = timedelta(minutes=15)
BATCH = 1_000  # readings per ingest call


@dataclass(frozen=True)
class DemoMeter:
    owner: str
    serial: str
    kind: MeterKind
    capacity_kw: str
    solar_kw: float  # rated array power; 0 for a consumer
    base_kw: float  # household base load
    evening_kw: float  # extra load around 19:00 UTC


DEMO_METERS = (
    DemoMeter("alice", "DEMO-ALICE-01", MeterKind.bidirectional, "8", 6.0, 0.35, 1.2),
    DemoMeter("bob", "DEMO-BOB-01", MeterKind.bidirectional, "6", 4.5, 0.30, 0.9),
    DemoMeter("carol", "DEMO-CAROL-01", MeterKind.consumption, "7", 0.0, 0.45, 1.6),
    DemoMeter("dave", "DEMO-DAVE-01", MeterKind.consumption, "7", 0.0, 0.40, 1.4),
)

TOPUPS = {"alice": "20.00", "bob": "20.00", "carol": "60.00", "dave": "45.00"}

# (username, side, kWh, limit price per kWh): prosumers sell their expected surplus, consumers bid.
ORDERS = (
    ("alice", "sell", "1.200", "0.110000"),
    ("bob", "sell", "0.800", "0.095000"),
    ("carol", "buy", "1.000", "0.140000"),
    ("dave", "buy", "0.700", "0.120000"),
)


def _sun(at: datetime) -> float:
    """Clear-sky shape: a half sine between 06:00 and 18:00 UTC, 0 at night."""
    hours = at.hour + at.minute / 60
    if not 6 <= hours <= 18:
        return 0.0
    return math.sin(math.pi * (hours - 6) / 12)


def _load(at: datetime, meter: DemoMeter) -> float:
    """Base load plus a morning bump and an evening peak (kW)."""
    hours = at.hour + at.minute / 60
    morning = 0.5 * math.exp(-(((hours - 7.5) / 1.0) ** 2))
    evening = meter.evening_kw * math.exp(-(((hours - 19.0) / 1.8) ** 2))
    return meter.base_kw + morning + evening


def last_interval_end(now: datetime) -> datetime:
    """The end of the newest complete 15-minute interval at ``now``."""
    end = now.replace(second=0, microsecond=0)
    return end - timedelta(minutes=end.minute % 15)


def readings_for(meter: DemoMeter, end: datetime, days: int = HISTORY_DAYS) -> list[dict[str, Any]]:
    """Readings for the 15-minute intervals ending after ``end - days`` up to ``end``."""
    rng = random.Random(meter.serial)
    out: list[dict[str, Any]] = []
    at = end - timedelta(days=days) + INTERVAL
    cloud = 1.0
    while at <= end:
        mid = at - INTERVAL / 2
        if at.minute == 0:  # weather changes by the hour
            cloud = min(1.0, max(0.15, cloud + rng.uniform(-0.3, 0.3)))
        produced_kw = meter.solar_kw * _sun(mid) * cloud * rng.uniform(0.93, 1.0)
        consumed_kw = _load(mid, meter) * rng.uniform(0.85, 1.15)
        out.append(
            {
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "energy_produced_kwh": round(produced_kw / 4, 3),
                "energy_consumed_kwh": round(consumed_kw / 4, 3),
                "voltage": round(rng.uniform(228.0, 236.0), 1),
                "frequency": round(rng.uniform(49.95, 50.05), 3),
            }
        )
        at += INTERVAL
    return out


async def _users(session: AsyncSession) -> dict[str, User]:
    rows = await session.scalars(select(User).where(User.region == DEMO_REGION))
    return {user.username: user for user in rows}


async def seed_activity(rt: Runtime) -> list[str]:
    """Create the demo's meters, readings, money, installation and orders once, in one
    transaction: a failure leaves nothing half-made for the next start to skip."""
    async with rt.db.sessionmaker() as session:
        if await session.scalar(select(Meter.id).where(Meter.serial == DEMO_METERS[0].serial)):
            return ["  demo meters, readings and orders exist"]
        users = await _users(session)
        missing = ({m.owner for m in DEMO_METERS} | {"admin", "erin"}) - users.keys()
        if missing:
            return [f"  demo activity skipped: no demo users {sorted(missing)}"]
        admin = Principal(user=users["admin"])
        end = last_interval_end(rt.clock.now())
        meters: dict[str, Meter] = {}
        lines = []
        for spec in DEMO_METERS:
            meter = await register_meter(
                session,
                rt,
                admin,
                MeterIn.model_validate(
                    {
                        "serial": spec.serial,
                        "kind": spec.kind.value,
                        "region": DEMO_REGION,
                        "capacity_kw": spec.capacity_kw,
                        "owner_id": str(users[spec.owner].id),
                        "metadata": {"demo": True},
                    }
                ),
            )
            meters[spec.owner] = meter
            readings = readings_for(spec, end)
            stored = 0
            for start in range(0, len(readings), BATCH):
                result = await ingest_for_meter(
                    session, rt, meter, {"readings": readings[start : start + BATCH]}
                )
                stored += result.accepted
            lines.append(f"  meter   {spec.serial} ({spec.owner}): {stored} readings")

        for username, amount in TOPUPS.items():
            principal = Principal(user=users[username])
            intent = await create_topup(
                session, rt, principal, TopupIn.model_validate({"amount": amount}).amount
            )
            await complete_intent(session, rt, intent.id, actor=admin)
            lines.append(f"  top-up  {username}: {amount}")

        await create_installation(
            session,
            rt,
            admin,
            InstallationIn.model_validate(
                {
                    "meter_id": str(meters["bob"].id),
                    "shares": [
                        {"user_id": str(users["bob"].id), "percent": 45},
                        {"user_id": str(users["erin"].id), "percent": 35},
                    ],
                    "platform_percent": 20,
                }
            ),
        )
        lines.append("  shares  DEMO-BOB-01: bob 45%, erin 35%, platform 20%")

        for username, side, kwh, price in ORDERS:
            order = await place_order(
                session,
                rt,
                Principal(user=users[username]),
                OrderIn.model_validate(
                    {
                        "side": side,
                        "quantity_kwh": kwh,
                        "limit_price": price,
                        "client_order_id": f"demo-{username}-{uuid.uuid4().hex[:8]}",
                    }
                ),
            )
            lines.append(f"  order   {username} {side} {kwh} kWh @ {price} for {order.epoch}")
        await session.commit()
        return lines
