"""The meter registry, the ingest entry points, corrections, commands and the dead-letter list."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.models import STAFF_ROLES, Role, User, UserStatus
from gridex.auth.service import Principal
from gridex.core.clock import utc_iso
from gridex.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import kwh_to_wh, wh_to_kwh
from gridex.meters import repository as repo
from gridex.meters.ingest import IngestResult, ingest
from gridex.meters.models import (
    CommandStatus,
    Granularity,
    Meter,
    MeterCommand,
    MeterReading,
    MeterStatus,
    ReadingCorrection,
    RejectedReading,
)
from gridex.meters.rollups import rebuild_rollups
from gridex.meters.schemas import (
    STAFF_ONLY_FIELDS,
    CommandIn,
    CorrectionIn,
    IngestOut,
    MeterIn,
    MeterOut,
    MeterTotals,
    MeterUpdate,
    ReadingOut,
    RejectedItemOut,
)
from gridex.meters.validation import (
    ALLOWED_INTERVALS,
    InvalidReading,
    Item,
    MeterRef,
    Reading,
    Window,
    parse_reading,
)
from gridex.regions.models import MeterApproval
from gridex.regions.service import require_region

# Commands an owner may send to their own meter; the others change what is metered or switch
# power, so only operators and admins send them.
OWNER_COMMANDS = frozenset({"reboot", "set_interval"})


def is_staff(principal: Principal) -> bool:
    return principal.role in STAFF_ROLES


def _audit(
    session: AsyncSession,
    principal: Principal,
    meter: Meter,
    action: str,
    *,
    at: datetime,
    details: dict[str, Any],
    actor_type: str = "user",
) -> None:
    """An audit record of ``action`` on ``meter`` by ``principal``."""
    record(
        session,
        at=at,
        action=action,
        actor_id=principal.user.id,
        actor_type=actor_type,
        subject_type="meter",
        subject_id=meter.id,
        details=details,
    )


# --- access ----------------------------------------------------------------------------------


async def get_meter(session: AsyncSession, principal: Principal, meter_id: uuid.UUID) -> Meter:
    """The meter if ``principal`` may see it, else 404 (foreign meters do not exist). Which
    routes an API key reaches at all is the scope table's (``gridex.auth.scopes``)."""
    meter = await session.get(Meter, meter_id)
    if meter is None or meter.deleted_at is not None:
        raise NotFound("No such meter")
    key = principal.api_key
    if key is not None and key.meter_id is not None and key.meter_id != meter.id:
        raise NotFound("No such meter")
    if not is_staff(principal) and meter.owner_id != principal.user.id:
        raise NotFound("No such meter")
    return meter


async def get_ingest_meter(
    session: AsyncSession, principal: Principal, meter_id: uuid.UUID
) -> Meter:
    """Readings for one meter come from its owner or from an API key bound to it."""
    meter = await get_meter(session, principal, meter_id)
    key = principal.api_key
    if key is not None and key.meter_id != meter.id:
        raise Forbidden("Only an API key bound to this meter may send its readings")
    if meter.owner_id != principal.user.id:
        raise Forbidden("Only the meter's owner or its bound API key may send its readings")
    return meter


# --- registry --------------------------------------------------------------------------------


def _capacity_w(capacity_kw: float) -> int:
    return kwh_to_wh(capacity_kw)  # kW -> W: the same x1000


async def _unique_serial(session: AsyncSession, serial: str) -> None:
    if await session.scalar(select(Meter.id).where(Meter.serial == serial)) is not None:
        raise Conflict("A meter with this serial exists", details={"field": "serial"})


async def _active_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None or user.status is UserStatus.deleted:
        raise NotFound("No such user")
    return user


async def register_meter(
    session: AsyncSession, rt: Runtime, principal: Principal, data: MeterIn
) -> Meter:
    """Prosumers register their own meters; operators and admins register for anyone."""
    owner_id = data.owner_id or principal.user.id
    if not is_staff(principal) and owner_id != principal.user.id:
        raise Forbidden("You can only register your own meters")
    if owner_id != principal.user.id:
        await _active_user(session, owner_id)
    region = data.region or principal.user.region
    if not region:
        raise ValidationFailed("region is required", details={"field": "region"})
    policy = (await require_region(session, region)).meter_approval
    await _unique_serial(session, data.serial)
    now = rt.clock.now()
    # Under `operator` approval a member's claim to a serial waits for an operator, who checks
    # that the device is theirs; staff registrations are that check already.
    pending = policy is MeterApproval.operator and not is_staff(principal)
    meter = Meter(
        serial=data.serial,
        kind=data.kind,
        status=MeterStatus.pending if pending else MeterStatus.active,
        region=region,
        owner_id=owner_id,
        capacity_w=_capacity_w(data.capacity_kw),
        location=data.location.model_dump(exclude_none=True),
        installation_date=data.installation_date,
        meter_metadata=data.metadata,
        device_public_key=data.device_public_key,
        interval_minutes=data.interval_minutes,
        online=False,
        created_at=now,
        updated_at=now,
    )
    session.add(meter)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same serial
        raise Conflict("A meter with this serial exists", details={"field": "serial"}) from exc
    _audit(
        session,
        principal,
        meter,
        "meter.registered",
        at=now,
        details={
            "serial": meter.serial,
            "owner_id": str(owner_id),
            "region": region,
            "status": meter.status.value,
        },
    )
    return meter


def meter_query(
    principal: Principal,
    *,
    region: str | None = None,
    status: MeterStatus | None = None,
    owner_id: uuid.UUID | None = None,
) -> Select[Meter]:
    query = select(Meter).where(Meter.deleted_at.is_(None)).order_by(Meter.serial)
    key = principal.api_key
    if key is not None and key.meter_id is not None:
        query = query.where(Meter.id == key.meter_id)
    if not is_staff(principal):
        query = query.where(Meter.owner_id == principal.user.id)
    elif owner_id is not None:
        query = query.where(Meter.owner_id == owner_id)
    if region:
        query = query.where(Meter.region == region)
    if status is not None:
        query = query.where(Meter.status == status)
    return query


def reading_out(r: MeterReading) -> ReadingOut:
    return ReadingOut(
        meter_id=r.meter_id,
        timestamp=r.timestamp,
        interval_minutes=r.interval_minutes,
        energy_consumed_kwh=wh_to_kwh(r.consumed_wh),
        energy_produced_kwh=wh_to_kwh(r.produced_wh),
        peak_demand_kw=None if r.peak_demand_w is None else wh_to_kwh(r.peak_demand_w),
        power_factor=r.power_factor,
        voltage=r.voltage,
        current=r.current,
        frequency=r.frequency,
        metadata=r.reading_metadata,
        source=r.source,
        received_at=r.received_at,
        revision=r.revision,
    )


async def meter_outs(session: AsyncSession, meters: list[Meter]) -> list[MeterOut]:
    """Meters with their last reading and all-time totals, in two set queries."""
    ids = [m.id for m in meters]
    totals = await repo.totals_by_meter(session, ids)
    latest = await repo.latest_readings(session, meters)
    out = []
    for m in meters:
        consumed, produced, count = totals.get(m.id, (0, 0, 0))
        last = latest.get(m.id)
        out.append(
            MeterOut(
                id=m.id,
                serial=m.serial,
                kind=m.kind,
                status=m.status,
                region=m.region,
                owner_id=m.owner_id,
                capacity_kw=wh_to_kwh(m.capacity_w),
                location=m.location or {},
                installation_date=m.installation_date,
                metadata=m.meter_metadata or {},
                device_public_key=m.device_public_key,
                interval_minutes=m.interval_minutes,
                online=m.online,
                last_reading_at=m.last_reading_at,
                last_seen_at=m.last_seen_at,
                last_reading=reading_out(last) if last is not None else None,
                totals=MeterTotals(
                    consumed_kwh=wh_to_kwh(consumed),
                    produced_kwh=wh_to_kwh(produced),
                    net_kwh=wh_to_kwh(consumed - produced),
                    readings=count,
                ),
                created_at=m.created_at,
                updated_at=m.updated_at,
            )
        )
    return out


async def meter_out(session: AsyncSession, meter: Meter) -> MeterOut:
    return (await meter_outs(session, [meter]))[0]


async def update_meter(
    session: AsyncSession, rt: Runtime, principal: Principal, meter: Meter, data: MeterUpdate
) -> Meter:
    changes = data.model_dump(exclude_unset=True)
    staff_fields = STAFF_ONLY_FIELDS & changes.keys()
    if staff_fields and not is_staff(principal):
        raise Forbidden(
            "Only operators and admins change these fields",
            details={"fields": sorted(staff_fields)},
        )
    for name, value in changes.items():
        if name == "location":
            meter.location = data.location.model_dump(exclude_none=True) if data.location else {}
        elif name == "metadata":
            meter.meter_metadata = value or {}
        elif name == "capacity_kw":
            if value is None:
                raise ValidationFailed("capacity_kw cannot be null")
            meter.capacity_w = _capacity_w(value)
        elif name in {"region", "kind", "interval_minutes"}:
            if value is None:
                raise ValidationFailed(f"{name} cannot be null")
            if name == "region":
                await require_region(session, value)
            setattr(meter, name, value)
        else:
            setattr(meter, name, value)
    meter.updated_at = rt.clock.now()
    _audit(
        session,
        principal,
        meter,
        "meter.updated",
        at=meter.updated_at,
        details={"fields": sorted(changes)},
    )
    return meter


async def delete_meter(
    session: AsyncSession, rt: Runtime, principal: Principal, meter: Meter
) -> None:
    """Soft delete: the meter disappears, its data stays for settlement and audit, and its
    serial stays taken so that old data is never attributed to another device."""
    now = rt.clock.now()
    meter.deleted_at = now
    meter.updated_at = now
    meter.status = MeterStatus.inactive
    meter.online = False
    meter.offline_due_at = None
    _audit(session, principal, meter, "meter.deleted", at=now, details={"serial": meter.serial})


async def set_status(
    session: AsyncSession, rt: Runtime, principal: Principal, meter: Meter, status: MeterStatus
) -> Meter:
    """Staff set a meter's status; ``active`` on a pending meter is its approval. Nobody sets a
    meter back to ``pending``: that is only where a member's registration starts."""
    previous = meter.status
    if status is MeterStatus.pending and previous is not MeterStatus.pending:
        raise ValidationFailed(
            "A meter becomes pending only when a member registers it", details={"field": "status"}
        )
    meter.status = status
    meter.updated_at = rt.clock.now()
    _audit(
        session,
        principal,
        meter,
        "meter.approved"
        if previous is MeterStatus.pending and status is MeterStatus.active
        else "meter.status_changed",
        at=meter.updated_at,
        details={"from": previous.value, "to": status.value},
    )
    if status is not previous:
        data = {"meter_id": str(meter.id), "from": previous.value, "status": status.value}
        channel = [f"meter:{meter.id}"]
        emit(session, rt.pubsub, channel, "meter_status_changed", data, meter.updated_at)
    return meter


async def assign(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    meter: Meter,
    user_id: uuid.UUID | None,
) -> Meter:
    """Give the meter to ``user_id`` (None: to nobody). Keys bound by the previous owner stop
    working, because ingest checks that a key's owner owns the meter."""
    if user_id is not None:
        user = await _active_user(session, user_id)
        if user.status is not UserStatus.active:
            raise Conflict("The user is not active")
    previous = meter.owner_id
    meter.owner_id = user_id
    meter.updated_at = rt.clock.now()
    _audit(
        session,
        principal,
        meter,
        "meter.assigned" if user_id else "meter.unassigned",
        at=meter.updated_at,
        details={
            "from": str(previous) if previous else None,
            "to": str(user_id) if user_id else None,
        },
    )
    return meter


# --- ingest ----------------------------------------------------------------------------------


def ingest_out(result: IngestResult) -> IngestOut:
    return IngestOut(
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=[
            RejectedItemOut(index=r.index, code=r.code, reason=r.reason, message=r.message)
            for r in result.rejected
        ],
    )


def _reading_list(rt: Runtime, body: Any) -> list[Any]:
    """The readings of a body that is one reading or ``{"readings": [...]}``."""
    if isinstance(body, dict) and "readings" in body:
        if set(body) != {"readings"} or not isinstance(body["readings"], list):
            raise ValidationFailed('Send one reading or {"readings": [...]}')
        readings: list[Any] = body["readings"]
    elif isinstance(body, dict):
        readings = [body]
    else:
        raise ValidationFailed('Send one reading or {"readings": [...]}')
    limit = rt.settings.ingest_max_readings
    if len(readings) > limit:
        raise PayloadTooLarge(
            f"At most {limit} readings per call", details={"max": limit, "got": len(readings)}
        )
    return readings


async def ingest_for_meter(
    session: AsyncSession, rt: Runtime, meter: Meter, body: Any, *, source: str = "http"
) -> IngestOut:
    ref = MeterRef.of(meter)
    items = [Item(i, raw, ref) for i, raw in enumerate(_reading_list(rt, body))]
    return ingest_out(await ingest(session, rt, items, source=source))


async def meters_by_serial(
    session: AsyncSession, serials: set[str], principal: Principal | None
) -> dict[str, MeterRef]:
    """Live meters by serial in one query, limited to what ``principal`` may write."""
    if not serials:
        return {}
    query = select(Meter).where(Meter.serial.in_(serials), Meter.deleted_at.is_(None))
    if principal is not None:
        key = principal.api_key
        if key is not None and key.meter_id is not None:
            query = query.where(Meter.id == key.meter_id)
        if not is_staff(principal):
            query = query.where(Meter.owner_id == principal.user.id)
    # No autoflush: a pending change (an API key's last use) is written with the readings,
    # inside their write transaction, rather than starting it before validation.
    with session.no_autoflush:
        return {m.serial: MeterRef.of(m) for m in await session.scalars(query)}


async def ingest_batch(
    session: AsyncSession, rt: Runtime, principal: Principal, body: Any
) -> IngestOut:
    """Readings of many meters named by ``meter_serial``; meters the key may not write are
    answered per item as unknown (``NOT_FOUND``)."""
    if principal.api_key is None:
        raise Forbidden("Batch ingest takes an API key with the scope 'readings:write'")
    if (
        not isinstance(body, dict)
        or set(body) != {"readings"}
        or not isinstance(body["readings"], list)
    ):
        raise ValidationFailed('The body must be {"readings": [...]}')
    raws = _reading_list(rt, body)
    serials = {
        raw["meter_serial"]
        for raw in raws
        if isinstance(raw, dict) and isinstance(raw.get("meter_serial"), str)
    }
    meters = await meters_by_serial(session, serials, principal)
    items = []
    for i, raw in enumerate(raws):
        serial = raw.get("meter_serial") if isinstance(raw, dict) else None
        if not isinstance(serial, str):
            items.append(Item(i, raw, None, None, ("malformed", "meter_serial is required")))
        else:
            items.append(Item(i, raw, meters.get(serial), serial))
    return ingest_out(await ingest(session, rt, items, source="batch"))


# --- corrections -----------------------------------------------------------------------------


def _reading_values(r: MeterReading) -> dict[str, Any]:
    return {
        "interval_minutes": r.interval_minutes,
        "energy_consumed_kwh": wh_to_kwh(r.consumed_wh),
        "energy_produced_kwh": wh_to_kwh(r.produced_wh),
        "peak_demand_kw": None if r.peak_demand_w is None else wh_to_kwh(r.peak_demand_w),
        "power_factor": r.power_factor,
        "voltage": r.voltage,
        "current": r.current,
        "frequency": r.frequency,
        "metadata": r.reading_metadata,
        "source": r.source,
        "received_at": utc_iso(r.received_at),
        "revision": r.revision,
    }


def _corrected(
    rt: Runtime, meter: Meter, reading: MeterReading, data: CorrectionIn, now: datetime
) -> Reading:
    """The corrected reading, validated by the ingest rules (unsigned, any age, also for an
    inactive meter: staff fix what is stored)."""
    payload = data.model_dump(exclude={"reason", "timestamp"}, exclude_none=True)
    payload["timestamp"] = utc_iso(reading.timestamp)
    payload.setdefault("interval_minutes", reading.interval_minutes)
    ref = dataclasses.replace(MeterRef.of(meter), public_key=None, status=MeterStatus.active)
    window = Window.at(now, rt.settings, oldest=reading.timestamp - timedelta(days=1))
    try:
        return parse_reading(Item(0, payload, ref), window)
    except InvalidReading as exc:
        raise ValidationFailed(exc.message, details={"reason": exc.reason}) from exc


def _replace_values(reading: MeterReading, new: Reading) -> None:
    reading.interval_minutes = new.interval_minutes
    reading.consumed_wh = new.consumed_wh
    reading.produced_wh = new.produced_wh
    reading.peak_demand_w = new.peak_demand_w
    reading.power_factor = new.power_factor
    reading.voltage = new.voltage
    reading.current = new.current
    reading.frequency = new.frequency
    reading.reading_metadata = new.metadata
    reading.revision += 1


async def correct_reading(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    meter: Meter,
    timestamp: datetime,
    data: CorrectionIn,
) -> tuple[ReadingCorrection, MeterReading]:
    """Replace a stored reading; the superseded values, who and why are kept, and the rollups
    follow in the same transaction. The correction row is the change event settlement reads."""
    if data.timestamp is not None and data.timestamp != timestamp:
        raise ValidationFailed("The body's timestamp differs from the path's")
    reading = await session.get(MeterReading, (meter.id, timestamp))
    if reading is None:
        raise NotFound("No reading is stored for this interval")
    now = rt.clock.now()
    new = _corrected(rt, meter, reading, data, now)
    correction = ReadingCorrection(
        meter_id=meter.id,
        timestamp=timestamp,
        old_consumed_wh=reading.consumed_wh,
        old_produced_wh=reading.produced_wh,
        new_consumed_wh=new.consumed_wh,
        new_produced_wh=new.produced_wh,
        old_values=_reading_values(reading),
        reason=data.reason,
        actor_id=principal.user.id,
        actor_type=principal.actor_type,
        api_key_id=principal.api_key.id if principal.api_key else None,
        corrected_at=now,
    )
    session.add(correction)
    _replace_values(reading, new)
    await session.flush()
    # Any instant inside the interval names its buckets.
    await rebuild_rollups(session, meter.id, timestamp - timedelta(microseconds=1))
    # Live notice for settlement and dashboards; the correction row is the durable event.
    emit(
        session,
        rt.pubsub,
        [f"meter:{meter.id}", "readings"],
        "reading_corrected",
        {
            "meter_id": str(meter.id),
            "timestamp": utc_iso(timestamp),
            "correction_id": str(correction.id),
        },
        now,
    )
    old = {"consumed_wh": correction.old_consumed_wh, "produced_wh": correction.old_produced_wh}
    _audit(
        session,
        principal,
        meter,
        "reading.corrected",
        at=now,
        actor_type=principal.actor_type,
        details={
            "timestamp": utc_iso(timestamp),
            "reason": data.reason,
            "old": old,
            "new": {"consumed_wh": new.consumed_wh, "produced_wh": new.produced_wh},
        },
    )
    return correction, reading


async def correction_meter(
    session: AsyncSession, principal: Principal, meter_id: uuid.UUID
) -> Meter:
    """Corrections come from operators and admins, or from an API key of one of them with the
    scope ``readings:correct`` (the scope table lets no other key reach the route)."""
    if not is_staff(principal):
        raise Forbidden("Only operators and admins correct readings")
    return await get_meter(session, principal, meter_id)


# --- dead letters ----------------------------------------------------------------------------


def rejected_query(
    *,
    meter_id: uuid.UUID | None = None,
    serial: str | None = None,
    reason: str | None = None,
    code: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[RejectedReading]:
    query = select(RejectedReading).order_by(RejectedReading.received_at.desc(), RejectedReading.id)
    if meter_id is not None:
        query = query.where(RejectedReading.meter_id == meter_id)
    if serial:
        query = query.where(RejectedReading.meter_serial == serial)
    if reason:
        query = query.where(RejectedReading.reason == reason)
    if code:
        query = query.where(RejectedReading.code == code)
    if source:
        query = query.where(RejectedReading.source == source)
    if since is not None:
        query = query.where(RejectedReading.received_at >= since)
    if until is not None:
        query = query.where(RejectedReading.received_at < until)
    return query


# --- commands --------------------------------------------------------------------------------


async def create_command(
    session: AsyncSession, rt: Runtime, principal: Principal, meter: Meter, data: CommandIn
) -> MeterCommand:
    """Queue a command for the device; the MQTT consumer publishes it (outbox) after commit."""
    if not rt.settings.mqtt_url:
        raise ServiceUnavailable(
            "Meter commands need the MQTT telemetry bus; set GRIDEX_MQTT_URL",
            details={"component": "mqtt"},
        )
    if not is_staff(principal) and data.command not in OWNER_COMMANDS:
        raise Forbidden(
            "Only operators send this command",
            details={"allowed": sorted(OWNER_COMMANDS)},
        )
    if data.command == "set_interval":
        interval = data.params.get("interval_minutes")
        if interval not in ALLOWED_INTERVALS or isinstance(interval, bool):
            raise ValidationFailed("set_interval needs params.interval_minutes in 1, 3, 5, 15")
    now = rt.clock.now()
    timeout = data.timeout_seconds or rt.settings.meter_command_timeout_seconds
    command = MeterCommand(
        meter_id=meter.id,
        command=data.command,
        params=data.params,
        status=CommandStatus.pending,
        deadline=now + timedelta(seconds=timeout),
        created_by_id=principal.user.id,
        created_at=now,
    )
    session.add(command)
    await session.flush()
    if is_staff(principal):
        _audit(
            session,
            principal,
            meter,
            "meter.command",
            at=now,
            details={"command": data.command, "command_id": str(command.id)},
        )
    return command


async def get_command(session: AsyncSession, meter: Meter, command_id: uuid.UUID) -> MeterCommand:
    command = await session.get(MeterCommand, command_id)
    if command is None or command.meter_id != meter.id:
        raise NotFound("No such command")
    return command


async def time_out_commands(session: AsyncSession, now: datetime) -> int:
    """Commands with no ack by their deadline become ``timeout``."""
    result = await session.execute(
        update(MeterCommand)
        .where(
            MeterCommand.status.in_([CommandStatus.pending, CommandStatus.sent]),
            MeterCommand.deadline < now,
        )
        .values(status=CommandStatus.timeout, completed_at=now, error="no ack before the deadline")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


__all__ = ["Granularity", "Role"]
