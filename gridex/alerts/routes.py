"""Thin HTTP layer of alerts: lists, the lifecycle, summaries and the operators' views."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from gridex.alerts import service
from gridex.alerts.models import AlertStatus, AlertType, Severity
from gridex.alerts.schemas import (
    AlertAnalyticsOut,
    AlertOut,
    AlertResolveIn,
    AlertStatsOut,
    BulkAcknowledgeIn,
    BulkAcknowledgeOut,
    SummaryOut,
)
from gridex.auth.deps import CurrentPrincipal, StaffPrincipal
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageDep, paginate
from gridex.core.schemas import AwareDatetime, raises

alerts_router = APIRouter(prefix="/alerts", tags=["alerts"])

# Stats and analytics cover the last 30 days unless told otherwise.
DEFAULT_PERIOD = timedelta(days=30)


def _period(
    now: datetime, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    end = end or now
    start = start or end - DEFAULT_PERIOD
    if start >= end:
        raise ValidationFailed(
            "`from` must be before `to`", details={"fields": {"from": "not before to"}}
        )
    return start, end


@alerts_router.get("")
async def list_alerts(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    region: str | None = None,
    meter_id: uuid.UUID | None = None,
    type: AlertType | None = None,
    severity: Severity | None = None,
    status: AlertStatus | None = None,
) -> Page[AlertOut]:
    """Own alerts; operators those of their region, admins all; newest first."""
    query = service.alerts_query(
        principal, region=region, meter_id=meter_id, type=type, severity=severity, status=status
    )
    rows, total = await paginate(session, query, page)
    return Page.build([AlertOut.model_validate(r) for r in rows], total, page)


@alerts_router.get("/summary")
async def alerts_summary(principal: CurrentPrincipal, session: SessionDep) -> SummaryOut:
    """The unresolved alerts the caller sees, by status, severity and type."""
    return await service.summary(session, principal)


@alerts_router.get("/stats", responses=raises(ValidationFailed))
async def alerts_stats(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
) -> AlertStatsOut:
    """Alerts raised in [from, to) (default: the last 30 days) that the caller sees."""
    start, end = _period(rt.clock.now(), from_, to)
    return await service.stats(session, principal, start, end)


@alerts_router.get("/unresolved", responses=raises(Forbidden))
async def unresolved_alerts(
    principal: StaffPrincipal,
    session: SessionDep,
    page: PageDep,
    region: str | None = None,
    type: AlertType | None = None,
    severity: Severity | None = None,
) -> Page[AlertOut]:
    """Open and acknowledged alerts of the operator's region (admins: all), newest first."""
    query = service.alerts_query(
        principal, region=region, type=type, severity=severity, unresolved=True
    )
    rows, total = await paginate(session, query, page)
    return Page.build([AlertOut.model_validate(r) for r in rows], total, page)


@alerts_router.get("/analytics", responses=raises(Forbidden, ValidationFailed))
async def alerts_analytics(
    principal: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
    region: str | None = None,
) -> AlertAnalyticsOut:
    """Counts by type and region, mean time to acknowledge and to resolve."""
    start, end = _period(rt.clock.now(), from_, to)
    return await service.analytics(session, principal, start, end, region)


@alerts_router.post("/bulk-acknowledge", responses=raises(Forbidden, NotFound))
async def bulk_acknowledge_alerts(
    body: BulkAcknowledgeIn, principal: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> BulkAcknowledgeOut:
    """Acknowledge many alerts at once; an id the caller cannot see is 404, nothing changes."""
    return await service.bulk_acknowledge(session, rt, principal, body.ids)


@alerts_router.get("/{alert_id}", responses=raises(NotFound))
async def get_alert(
    alert_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> AlertOut:
    """One alert the caller sees (own; operators their region's; admins any), else 404."""
    return AlertOut.model_validate(await service.get_alert(session, principal, alert_id))


@alerts_router.post("/{alert_id}/acknowledge", responses=raises(NotFound, Conflict))
async def acknowledge_alert(
    alert_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> AlertOut:
    """`open -> acknowledged`, with who and when; a resolved alert is 409 CONFLICT."""
    return AlertOut.model_validate(await service.acknowledge(session, rt, principal, alert_id))


@alerts_router.post("/{alert_id}/resolve", responses=raises(NotFound, Conflict))
async def resolve_alert(
    alert_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    body: AlertResolveIn | None = None,
) -> AlertOut:
    """Resolve with an optional note; an already resolved alert is 409 CONFLICT."""
    note = body.note if body else None
    return AlertOut.model_validate(await service.resolve(session, rt, principal, alert_id, note))
