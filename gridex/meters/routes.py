"""Thin HTTP layer of meters, readings and region telemetry."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, status

from gridex.auth.deps import (
    AdminPrincipal,
    AnyPrincipal,
    CurrentPrincipal,
    StaffPrincipal,
    require_role,
)
from gridex.auth.models import Role
from gridex.auth.service import Principal
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from gridex.core.pagination import Page, PageDep, paginate
from gridex.core.schemas import AwareDatetime, raises
from gridex.meters import greenbutton, service, telemetry
from gridex.meters.models import Meter, MeterStatus
from gridex.meters.schemas import (
    AnalyticsOut,
    AssignIn,
    BatchIn,
    CommandIn,
    CommandOut,
    CompareOut,
    CorrectionIn,
    CorrectionOut,
    IngestOut,
    Interval,
    MeterIn,
    MeterOut,
    MeterUpdate,
    PointsOut,
    ReadingIn,
    ReadingListIn,
    ReadingOut,
    RealtimeOut,
    RegionStatsOut,
    RejectedOut,
    StatsOut,
    StatusIn,
    TopConsumersOut,
)
from gridex.regions.service import UnknownRegion

meters_router = APIRouter(prefix="/meters", tags=["meters"])
readings_router = APIRouter(prefix="/readings", tags=["meters"])
telemetry_router = APIRouter(prefix="/telemetry", tags=["meters"])

MeterRegistrar = Annotated[
    Principal, Depends(require_role(Role.prosumer, Role.operator, Role.admin))
]
From = Annotated[AwareDatetime | None, Query(alias="from")]
To = Annotated[AwareDatetime | None, Query(alias="to")]


async def _readable_meter(
    meter_id: uuid.UUID, principal: AnyPrincipal, session: SessionDep
) -> Meter:
    return await service.get_meter(session, principal, meter_id)


async def _user_meter(
    meter_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> Meter:
    return await service.get_meter(session, principal, meter_id)


async def _staff_meter(
    meter_id: uuid.UUID, principal: StaffPrincipal, session: SessionDep
) -> Meter:
    return await service.get_meter(session, principal, meter_id)


# Foreign meters answer 404 through these loaders; an API key without the scope, 403.
ReadableMeter = Annotated[Meter, Depends(_readable_meter)]
UserMeter = Annotated[Meter, Depends(_user_meter)]
StaffMeter = Annotated[Meter, Depends(_staff_meter)]


async def _json_body(request: Request) -> Any:
    """The raw JSON body, parsed with orjson: ingest validates each reading itself so that one
    bad reading is answered alone instead of failing the whole call."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("The request body is not valid JSON") from exc


def _body_doc(model: type[Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


# --- registry --------------------------------------------------------------------------------


@meters_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=raises(Conflict, UnknownRegion, Forbidden, NotFound, ValidationFailed),
)
async def register_meter(
    body: MeterIn, principal: MeterRegistrar, session: SessionDep, rt: RuntimeDep
) -> MeterOut:
    """Register a meter: prosumers their own, operators and admins for anyone (`owner_id`)."""
    meter = await service.register_meter(session, rt, principal, body)
    return await service.meter_out(session, meter)


@meters_router.get("", responses=raises(Forbidden))
async def list_meters(
    principal: AnyPrincipal,
    session: SessionDep,
    page: PageDep,
    region: str | None = None,
    status: MeterStatus | None = None,
    owner_id: uuid.UUID | None = None,
) -> Page[MeterOut]:
    """Own meters; operators and admins see all, filtered by region, status and owner."""
    query = service.meter_query(principal, region=region, status=status, owner_id=owner_id)
    rows, total = await paginate(session, query, page)
    return Page.build(await service.meter_outs(session, rows), total, page)


@meters_router.get("/{meter_id}", responses=raises(Forbidden, NotFound))
async def get_meter(meter: ReadableMeter, session: SessionDep) -> MeterOut:
    """One meter with its last reading, totals and whether it is online."""
    return await service.meter_out(session, meter)


@meters_router.patch(
    "/{meter_id}", responses=raises(UnknownRegion, Forbidden, NotFound, ValidationFailed)
)
async def update_meter(
    body: MeterUpdate,
    meter: UserMeter,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> MeterOut:
    """Owners change location, metadata and installation date; staff everything else too."""
    await service.update_meter(session, rt, principal, meter, body)
    return await service.meter_out(session, meter)


@meters_router.delete(
    "/{meter_id}", status_code=status.HTTP_204_NO_CONTENT, responses=raises(Forbidden, NotFound)
)
async def delete_meter(
    meter_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> Response:
    """Admins: soft delete; the meter disappears, its data stays for settlement and audit, and
    its serial stays taken."""
    meter = await service.get_meter(session, principal, meter_id)
    await service.delete_meter(session, rt, principal, meter)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@meters_router.put("/{meter_id}/status", responses=raises(Forbidden, NotFound))
async def set_status(
    body: StatusIn,
    meter: StaffMeter,
    principal: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> MeterOut:
    """Staff: set `active`, `inactive` (readings are refused) or `maintenance` (readings are
    still accepted)."""
    await service.set_status(session, rt, principal, meter, body.status)
    return await service.meter_out(session, meter)


@meters_router.post("/{meter_id}/assign", responses=raises(Forbidden, NotFound, Conflict))
async def assign_meter(
    meter_id: uuid.UUID,
    body: AssignIn,
    principal: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> MeterOut:
    """Admins: give the meter to an active user (`user_id`)."""
    meter = await service.get_meter(session, principal, meter_id)
    await service.assign(session, rt, principal, meter, body.user_id)
    return await service.meter_out(session, meter)


@meters_router.post("/{meter_id}/unassign", responses=raises(Forbidden, NotFound))
async def unassign_meter(
    meter_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> MeterOut:
    """Admins: take the meter from its owner; it stays registered without one."""
    meter = await service.get_meter(session, principal, meter_id)
    await service.assign(session, rt, principal, meter, None)
    return await service.meter_out(session, meter)


# --- ingest and corrections ------------------------------------------------------------------


@meters_router.post(
    "/{meter_id}/readings",
    responses=raises(PayloadTooLarge, Forbidden, NotFound, ValidationFailed),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [ReadingIn.model_json_schema(), ReadingListIn.model_json_schema()]
                    }
                }
            },
        }
    },
)
async def post_readings(
    meter_id: uuid.UUID,
    request: Request,
    principal: AnyPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> IngestOut:
    """One reading or `{"readings": [...]}` from the owner or an API key bound to the meter."""
    meter = await service.get_ingest_meter(session, principal, meter_id)
    return await service.ingest_for_meter(session, rt, meter, await _json_body(request))


@readings_router.post(
    "/batch",
    responses=raises(PayloadTooLarge, Forbidden, ValidationFailed),
    openapi_extra=_body_doc(BatchIn),
)
async def post_batch(
    request: Request, principal: AnyPrincipal, session: SessionDep, rt: RuntimeDep
) -> IngestOut:
    """Up to 10,000 readings across meters (by `meter_serial`), API key with `readings:write`."""
    return await service.ingest_batch(session, rt, principal, await _json_body(request))


@meters_router.put(
    "/{meter_id}/readings/{timestamp}", responses=raises(Forbidden, NotFound, ValidationFailed)
)
async def correct_reading(
    meter_id: uuid.UUID,
    timestamp: AwareDatetime,
    body: CorrectionIn,
    principal: AnyPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> CorrectionOut:
    """Replace a stored reading (operators, or an API key with `readings:correct`)."""
    meter = await service.correction_meter(session, principal, meter_id)
    correction, reading = await service.correct_reading(
        session, rt, principal, meter, timestamp, body
    )
    return CorrectionOut(
        id=correction.id,
        reading=service.reading_out(reading),
        previous=correction.old_values,
        reason=correction.reason,
        corrected_by=correction.actor_id,
        actor_type=correction.actor_type,
        corrected_at=correction.corrected_at,
    )


@readings_router.get("/rejected", responses=raises(Forbidden))
async def rejected_readings(
    _: StaffPrincipal,
    session: SessionDep,
    page: PageDep,
    meter_id: uuid.UUID | None = None,
    serial: str | None = None,
    reason: str | None = None,
    code: str | None = None,
    source: str | None = None,
    since: From = None,
    until: To = None,
) -> Page[RejectedOut]:
    """The dead-letter table, newest first."""
    query = service.rejected_query(
        meter_id=meter_id,
        serial=serial,
        reason=reason,
        code=code,
        source=source,
        since=since,
        until=until,
    )
    rows, total = await paginate(session, query, page)
    return Page.build([RejectedOut.model_validate(r) for r in rows], total, page)


# --- queries ---------------------------------------------------------------------------------


@meters_router.get("/{meter_id}/latest", responses=raises(Forbidden, NotFound))
async def latest_reading(meter: ReadableMeter, session: SessionDep) -> ReadingOut:
    """The newest stored reading (404 `NOT_FOUND` before the first)."""
    return service.reading_out(await telemetry.latest(session, meter))


@meters_router.get("/{meter_id}/readings", responses=raises(Forbidden, NotFound, ValidationFailed))
async def get_readings(
    meter: ReadableMeter,
    session: SessionDep,
    rt: RuntimeDep,
    start: From = None,
    end: To = None,
    interval: Interval = "raw",
    after: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> PointsOut:
    """A series; every interval but `raw` is served from buckets, not scans of raw readings."""
    return await telemetry.points(session, rt, meter, interval, start, end, after, limit)


@meters_router.get("/{meter_id}/stats", responses=raises(Forbidden, NotFound, ValidationFailed))
async def get_stats(
    meter: ReadableMeter, session: SessionDep, rt: RuntimeDep, start: From = None, end: To = None
) -> StatsOut:
    """Totals, per-reading averages, min/max power and voltage/current averages of the raw
    readings in `from`..`to` (default: the last 30 days)."""
    return await telemetry.stats(session, rt, meter, start, end)


@meters_router.get("/{meter_id}/analytics", responses=raises(Forbidden, NotFound, ValidationFailed))
async def get_analytics(
    meter: ReadableMeter, session: SessionDep, rt: RuntimeDep, start: From = None, end: To = None
) -> AnalyticsOut:
    """Consumption, usage patterns and environmental figures over `from`..`to` (default: the
    last 30 days); each figure is defined in docs/devices.md."""
    return await telemetry.analytics(session, rt, meter, start, end)


@meters_router.get("/{meter_id}/compare", responses=raises(Forbidden, NotFound))
async def get_compare(
    meter: ReadableMeter,
    session: SessionDep,
    rt: RuntimeDep,
    period: Literal["day", "week", "month"] = "day",
) -> CompareOut:
    """This `day`, `week` or `month` so far against the same stretch of the previous one."""
    return await telemetry.compare(session, rt, meter, period)


# --- commands --------------------------------------------------------------------------------


@meters_router.post(
    "/{meter_id}/commands",
    status_code=status.HTTP_202_ACCEPTED,
    responses=raises(Forbidden, NotFound, ServiceUnavailable, ValidationFailed),
)
async def send_command(
    body: CommandIn,
    meter: UserMeter,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> CommandOut:
    """Queue a command for the device over MQTT; 503 without an MQTT broker."""
    command = await service.create_command(session, rt, principal, meter, body)
    return CommandOut.model_validate(command)


@meters_router.get("/{meter_id}/commands/{command_id}", responses=raises(NotFound))
async def get_command(command_id: uuid.UUID, meter: UserMeter, session: SessionDep) -> CommandOut:
    """A command's state: `pending`, `sent`, `acked`, `failed` or `timeout`."""
    return CommandOut.model_validate(await service.get_command(session, meter, command_id))


# --- Green Button ----------------------------------------------------------------------------


@meters_router.get(
    "/{meter_id}/export/green-button",
    response_class=Response,
    responses={
        200: {
            "description": "A Green Button (ESPI) Atom feed, as a download",
            "content": {"application/atom+xml": {"schema": {"type": "string"}}},
        },
        **raises(Forbidden, NotFound, ValidationFailed),
    },
)
async def export_green_button(
    meter: ReadableMeter, session: SessionDep, rt: RuntimeDep, start: From = None, end: To = None
) -> Response:
    """ESPI Atom feed of the meter's intervals (default: the last 30 days)."""
    body = await greenbutton.export_meter(session, rt, meter, start, end)
    return Response(
        body,
        media_type="application/atom+xml",
        headers={"Content-Disposition": f'attachment; filename="{meter.serial}-green-button.xml"'},
    )


@meters_router.post(
    "/{meter_id}/import/green-button",
    responses=raises(PayloadTooLarge, NotFound, ValidationFailed),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A Green Button (ESPI) Atom feed of interval readings",
            "content": {"application/atom+xml": {"schema": {"type": "string"}}},
        }
    },
)
async def import_green_button(
    request: Request, meter: UserMeter, session: SessionDep, rt: RuntimeDep
) -> IngestOut:
    """Load an ESPI feed's intervals through the same validation and storage as any reading."""
    return await greenbutton.import_meter(session, rt, meter, await request.body())


# --- region telemetry ------------------------------------------------------------------------


@telemetry_router.get("/regions/{region}/stats", responses=raises(Forbidden, ValidationFailed))
async def region_stats(
    region: str,
    _: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    start: From = None,
    end: To = None,
) -> RegionStatsOut:
    """Staff: the region's consumption and production totals, peak and meters online."""
    return await telemetry.region_stats(session, rt, region, start, end)


@telemetry_router.get(
    "/regions/{region}/top-consumers", responses=raises(Forbidden, ValidationFailed)
)
async def region_top_consumers(
    region: str,
    _: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    start: From = None,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopConsumersOut:
    """Staff: the region's meters that consumed most in `from`..`to`, largest first."""
    return await telemetry.top_consumers(session, rt, region, start, end, limit)


@telemetry_router.get("/regions/{region}/realtime", responses=raises(Forbidden))
async def region_realtime(
    region: str, _: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> RealtimeOut:
    """Staff: the region's current load, from each meter's latest interval."""
    return await telemetry.realtime(session, rt, region)
