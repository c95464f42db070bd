"""The demo community's activity, so that a fresh `make run` shows a working market.

Created once, through the same service functions the API calls (so every rule applies): one meter
per person, a week of 15-minute readings (rooftop solar for the prosumers, household load for
everyone), wallet top-ups through the development payment path, a revenue-share installation on
Bob's roof with Erin as investor, and orders in the next open epoch.

While `gridex serve --demo` runs, the `demo_simulation` job keeps the community alive: every
minute it sends the demo meters' readings for the intervals that have ended, places each
person's orders for the next open epoch from a forecast of their surplus or load, and tops up a
consumer whose wallet runs low. Clearing, delivery and settlement then run as they would for real
meters. Readings come from a fixed seed per meter and interval (and a shared hourly weather), so
the same interval always reads the same, whenever it is generated; forecasts are noisier than
the readings, so settlement finds small shortfalls and surpluses as it would in real life.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import User
from gridex.auth.service import Principal
from gridex.core.clock import utc_iso
from gridex.core.errors import Conflict, GridexError
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.installations import create_installation
from gridex.ledger.schemas import InstallationIn
from gridex.market.epochs import epoch_length, next_open_start
from gridex.market.models import MarketOrder
from gridex.market.orders import place_order
from gridex.market.schemas import OrderIn, OrderOut
from gridex.meters.models import Meter, MeterKind
from gridex.meters.schemas import MeterIn
from gridex.meters.service import ingest_for_meter, register_meter
from gridex.payments.schemas import TopupIn
from gridex.payments.service import complete_intent, create_topup
from gridex.tariffs import repository as tariff_repository
from gridex.tariffs.rules import WEEKDAYS, Band
from gridex.tariffs.service import create_schedule
from gridex.users.bootstrap import DEMO_REGION, seed_demo

log = structlog.get_logger(__name__)

HISTORY_DAYS = 7
INTERVAL = timedelta(minutes=15)
BATCH = 1_000  # readings per ingest call
LOW_BALANCE_MICROS = 5_000_000  # a consumer below 5.00 is topped up again
MIN_ORDER_WH = 10


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

# The community's grid tariff (local time of the region): 0.30 per kWh, a weekday evening peak
# 17:00-21:00 at 0.42, night 00:00-07:00 at 0.20, feed-in 0.08. The market's band runs from the
# feed-in to the import price, and settlement charges shortfalls at the import price in force.
DEMO_IMPORT_MICROS = 300_000
DEMO_FEED_IN_MICROS = 80_000
DEMO_BANDS = (
    Band("peak", 17 * 60, 21 * 60, 420_000, WEEKDAYS),
    Band("off_peak", 0, 7 * 60, 200_000),
)


def _sun(at: datetime) -> float:
    """Clear-sky shape: a half sine between 06:00 and 18:00 UTC, 0 at night."""
    hours = at.hour + at.minute / 60
    if not 6 <= hours <= 18:
        return 0.0
    return math.sin(math.pi * (hours - 6) / 12)


def _clouds(at: datetime) -> float:
    """The community's shared weather: a sky factor per hour, blended with the previous hour."""

    def hourly(hour: datetime) -> float:
        return random.Random(f"weather-{hour:%Y%m%d%H}").uniform(0.2, 1.0)

    hour = at.replace(minute=0, second=0, microsecond=0)
    weight = at.minute / 60
    return (1 - weight) * hourly(hour - timedelta(hours=1)) + weight * hourly(hour)


def _load(at: datetime, meter: DemoMeter) -> float:
    """Base load plus a morning bump and an evening peak (kW)."""
    hours = at.hour + at.minute / 60
    morning = 0.5 * math.exp(-(((hours - 7.5) / 1.0) ** 2))
    evening = meter.evening_kw * math.exp(-(((hours - 19.0) / 1.8) ** 2))
    return meter.base_kw + morning + evening


def power_kw(meter: DemoMeter, at: datetime, *, noise: float = 0.07) -> tuple[float, float]:
    """(produced, consumed) kW around ``at``; the same inputs always give the same values."""
    rng = random.Random(f"{meter.serial}-{at.isoformat()}-{noise}")
    produced = meter.solar_kw * _sun(at) * _clouds(at) * rng.uniform(1 - noise, 1)
    consumed = _load(at, meter) * rng.uniform(1 - 2 * noise, 1 + 2 * noise)
    return produced, consumed


def reading_at(meter: DemoMeter, end: datetime) -> dict[str, Any]:
    """The reading of the 15-minute interval ending at ``end``, as a meter would send it."""
    produced_kw, consumed_kw = power_kw(meter, end - INTERVAL / 2)
    rng = random.Random(f"{meter.serial}-{end.isoformat()}-grid")
    return {
        "timestamp": end.isoformat().replace("+00:00", "Z"),
        "energy_produced_kwh": round(produced_kw / 4, 3),
        "energy_consumed_kwh": round(consumed_kw / 4, 3),
        "voltage": round(rng.uniform(228.0, 236.0), 1),
        "frequency": round(rng.uniform(49.95, 50.05), 3),
    }


def last_interval_end(now: datetime) -> datetime:
    """The end of the newest complete 15-minute interval at ``now``."""
    end = now.replace(second=0, microsecond=0)
    return end - timedelta(minutes=end.minute % 15)


def readings_for(meter: DemoMeter, end: datetime, days: int = HISTORY_DAYS) -> list[dict[str, Any]]:
    """Readings for the 15-minute intervals ending after ``end - days`` up to ``end``."""
    return readings_between(meter, end - timedelta(days=days), end)


def readings_between(meter: DemoMeter, after: datetime, end: datetime) -> list[dict[str, Any]]:
    """Readings for the 15-minute intervals ending in ``(after, end]``."""
    out: list[dict[str, Any]] = []
    at = after + INTERVAL
    while at <= end:
        out.append(reading_at(meter, at))
        at += INTERVAL
    return out


def demo_order(meter: DemoMeter, start: datetime, length: timedelta) -> OrderIn | None:
    """The order of a meter's owner for the epoch at ``start``: a prosumer offers the surplus it
    forecasts, a consumer bids for the load it forecasts (forecasts are noisier than readings)."""
    produced_kw, consumed_kw = power_kw(meter, start + length / 2, noise=0.2)
    hours = length.total_seconds() / 3600
    rng = random.Random(f"{meter.serial}-{start.isoformat()}-order")
    surplus_wh = int((produced_kw - consumed_kw) * hours * 1000)
    if meter.solar_kw:
        if surplus_wh < MIN_ORDER_WH:
            return None
        side, wh, price = "sell", surplus_wh, rng.uniform(0.08, 0.12)
    else:
        side, wh, price = "buy", int(consumed_kw * hours * 1000), rng.uniform(0.10, 0.16)
        if wh < MIN_ORDER_WH:
            return None
    return OrderIn.model_validate(
        {
            "side": side,
            "quantity_kwh": f"{wh / 1000:.3f}",
            "limit_price": f"{price:.4f}",
            "epoch": start.isoformat(),
            "client_order_id": f"demo-{meter.owner}-{start:%Y%m%dT%H%M}",
        }
    )


async def _users(session: AsyncSession) -> dict[str, User]:
    rows = await session.scalars(select(User).where(User.region == DEMO_REGION))
    return {user.username: user for user in rows}


async def place_demo_orders(rt: Runtime) -> list[tuple[str, OrderOut]]:
    """Each demo person's order for the next open epoch, unless they already have one there;
    one transaction per order, and an order the market refuses (no funds, gate just closed, a
    band that excludes the demo's prices) is skipped."""
    start = next_open_start(rt.clock.now(), rt.settings)
    length = epoch_length(rt.settings)
    placed = []
    for spec in DEMO_METERS:
        order = demo_order(spec, start, length)
        if order is None:
            continue
        async with rt.db.sessionmaker() as session:
            user = await session.scalar(
                select(User).where(User.username == spec.owner, User.region == DEMO_REGION)
            )
            if user is None:
                continue
            taken = await session.scalar(
                select(MarketOrder.id).where(
                    MarketOrder.user_id == user.id,
                    MarketOrder.client_order_id == order.client_order_id,
                )
            )
            if taken is not None:
                continue
            try:
                placed.append(
                    (
                        spec.owner,
                        await place_order(session, rt, Principal(user=user), order.as_new_order()),
                    )
                )
                await session.commit()
            except GridexError as exc:
                log.info("demo order skipped", user=spec.owner, code=exc.code)
    return placed


async def _top_up(session: AsyncSession, rt: Runtime, user: User, amount: str) -> None:
    micros = TopupIn.model_validate({"amount": amount}).amount
    intent = await create_topup(session, rt, Principal(user=user), micros)
    await complete_intent(session, rt, intent.id)


# The steps of ``seed_activity``, for a progress display: each meter, the money, the orders.
SEED_STEPS = len(DEMO_METERS) + 2


async def seed_activity(rt: Runtime, progress: Callable[[str], None] | None = None) -> list[str]:
    """Create the demo's meters, readings, money and installation once, in one transaction (a
    failure leaves nothing half-made for the next start to skip), then the first orders.
    ``progress`` is told each of the ``SEED_STEPS`` steps as it is done."""
    done = progress or (lambda _: None)
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
            stored = await _ingest(session, rt, meter, readings_for(spec, end))
            lines.append(f"  meter   {spec.serial} ({spec.owner}): {stored} readings")
            done(spec.serial)

        for username, amount in TOPUPS.items():
            await _top_up(session, rt, users[username], amount)
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
        lines += await _tariff(session, rt, admin, end - timedelta(days=HISTORY_DAYS))

        await session.commit()
    done("wallets and shares")
    for owner, order in await place_demo_orders(rt):
        lines.append(
            f"  order   {owner} {order.side} {order.quantity_kwh / 1000:.3f} kWh"
            f" @ {(order.limit_price or 0) / 1e6:.4f} for {order.epoch:%Y-%m-%d %H:%M} UTC"
        )
    done("orders")
    return lines


async def community_exists(rt: Runtime) -> bool:
    async with rt.db.sessionmaker() as session:
        found = await session.scalar(select(Meter.id).where(Meter.serial == DEMO_METERS[0].serial))
    return found is not None


async def create_community(
    rt: Runtime,
    *,
    refuse_existing: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """The whole demo community, as `gridex serve --demo` seeds it: the people
    (``users.bootstrap.seed_demo``), then their meters, readings, money and orders. Each part
    is created once; ``refuse_existing``: 409 when the community is already there.
    ``progress`` is told each of the ``SEED_STEPS`` steps of the activity as it is done."""
    if refuse_existing and await community_exists(rt):
        raise Conflict("The demo community exists already")
    lines = await seed_demo(rt.settings)
    return lines + await seed_activity(rt, progress)


async def _tariff(
    session: AsyncSession, rt: Runtime, admin: Principal, since: datetime
) -> list[str]:
    """The demo region's tariff from ``since`` (the start of the readings it seeds, which
    nothing has priced yet), unless it has one already."""
    if await tariff_repository.schedule_at(session, DEMO_REGION, rt.clock.now()) is not None:
        return []
    await create_schedule(
        session,
        rt,
        admin,
        region=DEMO_REGION,
        import_price_micros=DEMO_IMPORT_MICROS,
        feed_in_price_micros=DEMO_FEED_IN_MICROS,
        bands=list(DEMO_BANDS),
        holidays=[],
        effective_from=since,
        allow_past=True,
    )
    return [
        "  tariff  0.30/kWh, weekday peak 17:00-21:00 0.42, night 00:00-07:00 0.20, feed-in 0.08"
    ]


async def _ingest(
    session: AsyncSession, rt: Runtime, meter: Meter, readings: list[dict[str, Any]]
) -> int:
    stored = 0
    for start in range(0, len(readings), BATCH):
        chunk = {"readings": readings[start : start + BATCH]}
        stored += (await ingest_for_meter(session, rt, meter, chunk)).accepted
    return stored


async def simulate(rt: Runtime) -> int:
    """One step of the live demo: readings of ended intervals, next epoch's orders, top-ups.
    Returns the number of readings stored. Does nothing until the demo community exists."""
    async with rt.db.sessionmaker() as session:
        users = await _users(session)
        meters = {
            meter.serial: meter
            for meter in await session.scalars(
                select(Meter).where(
                    Meter.serial.in_([m.serial for m in DEMO_METERS]), Meter.deleted_at.is_(None)
                )
            )
        }
        if not meters:
            return 0
        end = last_interval_end(rt.clock.now())
        stored = 0
        topped_up = []
        for spec in DEMO_METERS:
            meter = meters.get(spec.serial)
            if meter is None:
                continue
            newest = meter.last_reading_at
            after = max(newest, end - timedelta(days=1)) if newest else end - INTERVAL
            stored += await _ingest(session, rt, meter, readings_between(spec, after, end))
        for spec in DEMO_METERS:
            user = users.get(spec.owner)
            if user is None or spec.solar_kw:
                continue
            balances = await ledger.wallet_balances(session, user.id)
            if balances.available_micros < LOW_BALANCE_MICROS:
                await _top_up(session, rt, user, TOPUPS[spec.owner])
                topped_up.append(spec.owner)
        await session.commit()
    placed = await place_demo_orders(rt)
    log.info(
        "demo_tick",
        readings=stored,
        orders=len(placed),
        epoch=utc_iso(placed[0][1].epoch) if placed else None,
        topped_up=topped_up,
    )
    return stored
