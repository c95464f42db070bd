from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response, status

from gridex import __version__
from gridex.admin import service, system
from gridex.admin.schemas import (
    AdminStatsOut,
    DemoDataOut,
    DepartmentOut,
    HealthOut,
    OutboxEmailOut,
    RuntimeConfigOut,
    SystemInfoOut,
)
from gridex.audit.service import audit_query
from gridex.auth.deps import AdminPrincipal
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import (
    AuthenticationRequired,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
    error_response,
)
from gridex.core.metrics import render as render_metrics
from gridex.core.pagination import Page, PageDep, paginate
from gridex.core.responses import OrjsonResponse
from gridex.core.schemas import AwareDatetime, raises
from gridex.core.security import constant_time_equal
from gridex.mail.service import outbox_query
from gridex.runtimeconfig import service as runtimeconfig
from gridex.users.schemas import AuditEntryOut

admin_router = APIRouter(prefix="/admin", tags=["admin"])
system_router = APIRouter(prefix="/system", tags=["system"])
departments_router = APIRouter(prefix="/departments", tags=["users"])


@admin_router.get("/audit-logs", responses=raises(Forbidden))
async def audit_logs(
    _: AdminPrincipal,
    session: SessionDep,
    page: PageDep,
    actor_id: uuid.UUID | None = None,
    action: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    outcome: Annotated[str | None, Query(pattern="^(success|failure)$")] = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
) -> Page[AuditEntryOut]:
    """Admins: the audit trail, newest first, filtered by actor, action, subject, outcome
    and time."""
    query = audit_query(
        actor_id=actor_id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        outcome=outcome,
        since=from_,
        until=to,
    )
    rows, total = await paginate(session, query, page)
    return Page.build([AuditEntryOut.model_validate(r) for r in rows], total, page)


@admin_router.get("/outbox", responses=raises(Forbidden))
async def outbox(
    _: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern="^(pending|sent|failed|logged)$")] = None,
    to: Annotated[str | None, Query(max_length=254)] = None,
) -> Page[OutboxEmailOut]:
    """Emails sent and waiting: OTP codes, invitations, password resets."""
    rows, total = await paginate(session, outbox_query(status=status, to=to), page)
    items = [OutboxEmailOut.model_validate(r) for r in rows]
    if rt.settings.env == "production":
        items = [item.model_copy(update={"body": None}) for item in items]
    return Page.build(items, total, page)


@admin_router.get("/config", responses=raises(Forbidden))
async def get_runtime_config(
    _: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> RuntimeConfigOut:
    """The settings admins may change at runtime: value in force, default, where it comes from."""
    return RuntimeConfigOut.model_validate(await runtimeconfig.get_config(session, rt))


@admin_router.put("/config", responses=raises(Forbidden, ValidationFailed))
async def put_runtime_config(
    admin: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    changes: Annotated[
        dict[str, Any],
        Body(
            examples=[{"fee_bps": 50, "offline_after_intervals": 4, "gate_closure_seconds": None}]
        ),
    ],
) -> RuntimeConfigOut:
    """Change runtime settings (null: back to the environment's value). All or nothing,
    audited, and applied by every worker without a restart."""
    return RuntimeConfigOut.model_validate(
        await runtimeconfig.update_config(session, rt, admin.user.id, changes)
    )


@admin_router.get("/stats", responses=raises(Forbidden))
async def admin_stats(_: AdminPrincipal, session: SessionDep, rt: RuntimeDep) -> AdminStatsOut:
    """Users, meters, market, ledger and health at a glance."""
    return AdminStatsOut.model_validate(await service.admin_stats(session, rt))


@admin_router.post(
    "/demo-data",
    status_code=status.HTTP_201_CREATED,
    responses=raises(Forbidden, Conflict, ServiceUnavailable),
)
async def demo_data(admin: AdminPrincipal, rt: RuntimeDep) -> DemoDataOut:
    """Create the demo community of `gridex serve --demo` (refused in production: 403; once
    it exists: 409)."""
    lines = await service.create_demo_data(rt, admin.user.id)
    return DemoDataOut(created=True, lines=lines)


@system_router.get("/info", responses=raises(Forbidden))
async def system_info(_: AdminPrincipal, rt: RuntimeDep) -> SystemInfoOut:
    """Version, backends and a configuration summary without secrets."""
    return SystemInfoOut(
        version=__version__,
        environment=rt.settings.env,
        uptime_seconds=round(rt.uptime_seconds, 3),
        backends=system.backends(rt),
        config=system.config_summary(rt),
        jobs=[job.name for job in rt.jobs.jobs],
    )


health_router = APIRouter(tags=["system"])


@health_router.get("/health")
async def health(rt: RuntimeDep) -> OrjsonResponse:
    """Every dependency's state; 503 only when the database is down."""
    result = await system.checks(rt)
    status = system.overall(result)
    body = HealthOut(
        status=status, version=__version__, timestamp=rt.clock.now(), checks=result
    ).model_dump(mode="json")
    return OrjsonResponse(body, status_code=503 if status == "unhealthy" else 200)


@health_router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "alive"}


@health_router.get("/health/ready", responses=raises(ServiceUnavailable))
async def ready(rt: RuntimeDep) -> OrjsonResponse:
    """200 when the database answers, else 503: take this worker out of the load balancer."""
    database = await system.check_database(rt)
    if database != "ok":
        return error_response("SERVICE_UNAVAILABLE", 503, "The database is not reachable")
    return OrjsonResponse({"status": "ready", "checks": {"database": database}})


@health_router.get(
    "/metrics",
    response_class=Response,
    include_in_schema=True,
    responses=raises(AuthenticationRequired),
)
async def metrics(
    rt: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Prometheus metrics; when GRIDEX_METRICS_TOKEN is set, send it as a bearer token."""
    token = rt.settings.metrics_token
    if token and not (
        authorization is not None
        and authorization.startswith("Bearer ")
        and constant_time_equal(authorization[7:], token)
    ):
        raise AuthenticationRequired("The metrics token is required")
    payload, content_type = render_metrics()
    return Response(payload, media_type=content_type)


@departments_router.get("/{name}", responses=raises(NotFound))
async def department(name: str, session: SessionDep) -> DepartmentOut:
    """Public summary of a department: members by role and regions."""
    return DepartmentOut.model_validate(await service.department_summary(session, name))
