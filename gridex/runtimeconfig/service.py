"""Runtime settings: what may be changed, how values are checked, and how every process applies
them without a restart.

A process's ``runtime.settings`` is its *effective* settings: the environment's values
(``GRIDEX_*``, kept as the store's ``base``) with the database's overrides applied. Every reader
(market fee and gate closure, the meters' offline threshold, analytics' emission factors)
reads ``rt.settings`` as before; this module keeps that object current:

* a change (``update_config``) bumps the single version row and, after commit, publishes
  ``config_changed`` on the ``runtime_config`` channel: with Redis every worker hears it at once
  and marks its settings stale (``watch``);
* pub/sub is at most once, so each process also compares its loaded version with the database's
  at most every ``GRIDEX_RUNTIME_CONFIG_TTL_SECONDS`` (one primary-key read) before a request or
  a job runs (``refresh``). A missed event therefore costs at most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.core.config import Settings
from gridex.core.errors import ValidationFailed
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import UnitError, micros_to_money, money_to_micros, plain_decimal
from gridex.regions.service import get_region
from gridex.runtimeconfig.models import RuntimeConfigVersion, RuntimeSetting

log = structlog.get_logger(__name__)

CHANNEL = "runtime_config"
STORE = "runtimeconfig.store"
_VERSION_ROW = 1

Kind = Literal["int", "decimal", "float", "money", "region_decimals"]


@dataclass(frozen=True, slots=True)
class Spec:
    """A setting admins may change at runtime: its ``Settings`` field, type and bounds."""

    kind: Kind
    low: Decimal
    high: Decimal
    description: str
    places: int = 6


SPECS: dict[str, Spec] = {
    "fee_bps": Spec(
        "int", Decimal(0), Decimal(10_000), "Platform fee of regions without their own, in bp"
    ),
    "gate_closure_seconds": Spec(
        "int", Decimal(0), Decimal(3600), "Orders close this many seconds before their epoch"
    ),
    "market_horizon_hours": Spec(
        "int", Decimal(1), Decimal(24 * 31), "Orders may name epochs this many hours ahead"
    ),
    "settlement_grace_seconds": Spec(
        "int", Decimal(0), Decimal(86_400), "An epoch counts as delivered this long after its end"
    ),
    "offline_after_intervals": Spec(
        "int", Decimal(1), Decimal(1000), "A meter is offline after this many silent intervals"
    ),
    "grid_emission_factor_kg_per_kwh": Spec(
        "decimal", Decimal(0), Decimal(5), "kg CO2e per kWh of grid electricity (default)"
    ),
    "region_emission_factors": Spec(
        "region_decimals",
        Decimal(0),
        Decimal(5),
        "kg CO2e per kWh of grid electricity, per region (overrides the default)",
    ),
    # The alert rules' thresholds (gridex/alerts; docs/alerts.md says how each is used).
    "alert_spike_factor": Spec(
        "float",
        Decimal("1.001"),
        Decimal(100),
        "consumption_spike: a reading above this multiple of the meter's profile",
        places=3,
    ),
    "alert_spike_min_wh": Spec(
        "int", Decimal(0), Decimal(1_000_000), "... and at least this many Wh above it"
    ),
    "alert_drop_ratio": Spec(
        "float",
        Decimal(0),
        Decimal("0.999"),
        "generation_drop: production below this share of the meter's profile",
        places=3,
    ),
    "alert_drop_min_expected_wh": Spec(
        "int", Decimal(1), Decimal(1_000_000), "... where the profile expects at least these Wh"
    ),
    "alert_voltage_min": Spec(
        "float", Decimal(1), Decimal(1000), "voltage_out_of_range below this, V", places=1
    ),
    "alert_voltage_max": Spec(
        "float", Decimal(1), Decimal(1000), "voltage_out_of_range above this, V", places=1
    ),
    "alert_rejections_threshold": Spec(
        "int", Decimal(1), Decimal(10_000), "reading_rejected after this many rejected readings"
    ),
    "alert_rejections_window_minutes": Spec(
        "int", Decimal(1), Decimal(10_080), "... of one meter within this many minutes"
    ),
}


# --- values: API form <-> Settings form ---------------------------------------------------------


def _bad(key: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{key}: {message}", details={"field": key})


def _number(key: str, spec: Spec, raw: object) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _bad(key, "must be a number or a decimal string")
    try:
        value = plain_decimal(raw, spec.places)
    except UnitError as exc:
        raise _bad(key, str(exc)) from None
    if not spec.low <= value <= spec.high:
        raise _bad(key, f"must be between {spec.low} and {spec.high}")
    return value


async def parse(session: AsyncSession, key: str, raw: object) -> Any:
    """The ``Settings`` value of ``raw`` (as a client sent it) for ``key``; 422 when refused."""
    spec = SPECS[key]
    if spec.kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _bad(key, "must be a whole number")
        return int(_number(key, spec, raw))
    if spec.kind == "decimal":
        return _number(key, spec, raw)
    if spec.kind == "float":
        return float(_number(key, spec, raw))
    if spec.kind == "money":
        value = _number(key, spec, raw)
        return Decimal(micros_to_money(money_to_micros(value)))
    if not isinstance(raw, dict):
        raise _bad(key, "must be an object of region name to number")
    out: dict[str, Decimal] = {}
    for region, factor in raw.items():
        if await get_region(session, region) is None:
            raise ValidationFailed(
                f"{key}: there is no region {region!r}",
                details={"field": key, "region": region},
            )
        out[region] = _number(f"{key}.{region}", spec, factor)
    return out


def dump(value: Any) -> Any:
    """A ``Settings`` value in the API's (and the database's JSON) form."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: dump(v) for k, v in sorted(value.items())}
    return value


def _load(key: str, stored: Any) -> Any:
    """A stored JSON value back in ``Settings`` form (checked when it was written)."""
    kind = SPECS[key].kind
    if kind == "int":
        return int(stored)
    if kind == "region_decimals":
        return {region: Decimal(v) for region, v in stored.items()}
    if kind == "float":
        return float(stored)
    return Decimal(stored)


def effective(base: Settings, overrides: dict[str, Any]) -> Settings:
    """``base`` with ``overrides`` applied (values already in ``Settings`` form)."""
    return base.model_copy(update=overrides) if overrides else base


def _check_combination(values: Settings) -> None:
    if values.alert_voltage_min >= values.alert_voltage_max:
        raise ValidationFailed(
            "alert_voltage_min must be below alert_voltage_max",
            details={"field": "alert_voltage_min"},
        )
    if values.gate_closure_seconds >= values.market_horizon_hours * 3600:
        raise ValidationFailed(
            "gate_closure_seconds must be shorter than the trading horizon",
            details={"field": "gate_closure_seconds"},
        )


# --- the process's store ------------------------------------------------------------------------


@dataclass
class Store:
    """What one process loaded: the environment's settings, the overrides and their version."""

    base: Settings
    version: int = -1
    overrides: dict[str, Any] = field(default_factory=dict)
    checked_at: datetime | None = None
    stale: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def install(rt: Runtime) -> Store:
    """Give ``rt`` its store; ``rt.settings`` at this point is the environment's settings."""
    store = Store(base=rt.settings)
    rt.extensions[STORE] = store
    return store


def store_of(rt: Runtime) -> Store:
    store = rt.extensions.get(STORE)
    if not isinstance(store, Store):
        store = install(rt)
    return store


async def _stored(session: AsyncSession) -> tuple[int, dict[str, Any]]:
    version = await session.scalar(
        select(RuntimeConfigVersion.version).where(RuntimeConfigVersion.id == _VERSION_ROW)
    )
    rows = await session.scalars(select(RuntimeSetting))
    overrides = {row.key: _load(row.key, row.value) for row in rows if row.key in SPECS}
    return int(version or 0), overrides


async def refresh(rt: Runtime, *, force: bool = False) -> Settings:
    """``rt.settings``, reloaded first when it may be stale: marked so by an event, never
    loaded, or not compared with the database's version for the TTL (``force``: now)."""
    store = store_of(rt)
    now = rt.clock.now()
    ttl = timedelta(seconds=store.base.runtime_config_ttl_seconds)
    if not (force or store.stale or store.checked_at is None or now - store.checked_at >= ttl):
        return rt.settings
    async with store.lock:
        try:
            async with rt.db.sessionmaker() as session:
                version = await session.scalar(
                    select(RuntimeConfigVersion.version).where(
                        RuntimeConfigVersion.id == _VERSION_ROW
                    )
                )
                if int(version or 0) != store.version:
                    store.version, store.overrides = await _stored(session)
                    rt.settings = effective(store.base, store.overrides)
                    log.info(
                        "runtime_config_loaded",
                        version=store.version,
                        keys=sorted(store.overrides),
                    )
        except Exception as exc:
            # The database is away: keep the settings in force (the request or job meets the
            # outage on its own), and look again next time.
            log.warning("runtime_config_unavailable", error=str(exc)[:200])
            return rt.settings
        store.checked_at = now
        store.stale = False
    return rt.settings


async def watch(rt: Runtime) -> None:
    """Mark the settings stale whenever any process publishes a change (runs until cancelled)."""
    store = store_of(rt)
    async with rt.pubsub.subscribe(CHANNEL) as subscription:
        async for _ in subscription:
            store.stale = True


@contextlib.asynccontextmanager
async def watching(rt: Runtime) -> Any:
    """Run ``watch`` for the lifetime of the context (the app's lifespan)."""
    task = asyncio.get_running_loop().create_task(watch(rt))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# --- reading and changing -----------------------------------------------------------------------


async def get_config(session: AsyncSession, rt: Runtime) -> dict[str, Any]:
    """Every runtime setting: the value in force, the environment's default and its source."""
    version = await session.scalar(
        select(RuntimeConfigVersion).where(RuntimeConfigVersion.id == _VERSION_ROW)
    )
    rows = {row.key: row for row in await session.scalars(select(RuntimeSetting))}
    base = store_of(rt).base
    settings: dict[str, Any] = {}
    for key, spec in SPECS.items():
        row = rows.get(key)
        default = dump(getattr(base, key))
        settings[key] = {
            "value": row.value if row is not None else default,
            "default": default,
            "source": "runtime" if row is not None else "environment",
            "description": spec.description,
            "updated_at": row.updated_at if row is not None else None,
            "updated_by_id": row.updated_by_id if row is not None else None,
        }
    return {
        "version": version.version if version is not None else 0,
        "updated_at": version.updated_at if version is not None else None,
        "settings": settings,
    }


async def update_config(
    session: AsyncSession, rt: Runtime, actor_id: uuid.UUID, changes: dict[str, Any]
) -> dict[str, Any]:
    """Apply ``changes`` (key -> new value, or null for the environment's value) all or nothing:
    every value is checked, the version goes up, the change is audited with old and new values,
    and every process applies it (``refresh``)."""
    unknown = sorted(set(changes) - SPECS.keys())
    if unknown:
        raise ValidationFailed(
            f"Unknown setting {unknown[0]!r}", details={"field": unknown[0], "known": list(SPECS)}
        )
    if not changes:
        raise ValidationFailed("Name at least one setting to change")
    now = rt.clock.now()
    store = store_of(rt)
    # Lock the version row first: concurrent changes apply one after the other.
    version_row = await session.scalar(
        select(RuntimeConfigVersion)
        .where(RuntimeConfigVersion.id == _VERSION_ROW)
        .with_for_update()
    )
    rows = {row.key: row for row in await session.scalars(select(RuntimeSetting))}
    current = {key: _load(key, row.value) for key, row in rows.items() if key in SPECS}
    parsed: dict[str, Any] = {}
    for key, raw in changes.items():
        parsed[key] = None if raw is None else await parse(session, key, raw)
    after = {k: v for k, v in {**current, **parsed}.items() if v is not None}
    _check_combination(effective(store.base, after))

    audit: dict[str, Any] = {}
    for key, value in parsed.items():
        old = dump(current[key]) if key in current else None
        new = dump(value) if value is not None else None
        if old == new:
            continue
        audit[key] = {"old": old, "new": new, "default": dump(getattr(store.base, key))}
        row = rows.get(key)
        if value is None:
            await session.execute(delete(RuntimeSetting).where(RuntimeSetting.key == key))
        elif row is None:
            session.add(RuntimeSetting(key=key, value=new, updated_at=now, updated_by_id=actor_id))
        else:
            row.value, row.updated_at, row.updated_by_id = new, now, actor_id
    if audit:
        if version_row is None:
            version_row = RuntimeConfigVersion(id=_VERSION_ROW, version=0, updated_at=now)
            session.add(version_row)
        version_row.version += 1
        version_row.updated_at = now
        await session.flush()
        record(
            session,
            at=now,
            action="config.updated",
            actor_id=actor_id,
            subject_type="config",
            subject_id="runtime",
            details={"version": version_row.version, "changes": audit},
        )
        emit(session, rt.pubsub, [CHANNEL], "config_changed", {"version": version_row.version}, now)
        # This process reloads on its next read, whoever else hears the event.
        store.stale = True
    return await get_config(session, rt)
