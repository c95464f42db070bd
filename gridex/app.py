"""The FastAPI application: one factory for ``gridex serve``, workers, tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gridex import __version__
from gridex.admin.routes import admin_router, departments_router, health_router, system_router
from gridex.admin.service import DEMO_COMMUNITY, outstanding_invoices
from gridex.alerts.jobs import DUE_INVOICES, OVERDUE_INVOICES
from gridex.alerts.routes import alerts_router
from gridex.analytics.cache import cache_of
from gridex.analytics.routes import analytics_router, dashboard_router, reports_router
from gridex.analytics.service import OUTSTANDING_INVOICES
from gridex.auth.deps import OWNS_METER
from gridex.auth.routes import router as auth_router
from gridex.billing.jobs import INVOICES_ISSUED
from gridex.billing.routes import billing_router
from gridex.billing.service import overdue_invoices, unpaid_by_user
from gridex.chain.node import close_chain
from gridex.chain.routes import chain_admin_router, chain_router
from gridex.chain.views import wallet_chain_fields
from gridex.core.apidoc import hoist_defs
from gridex.core.clock import Clock, SystemClock
from gridex.core.config import API_PREFIX, Settings, get_settings
from gridex.core.db import Database
from gridex.core.deps import RuntimeDep
from gridex.core.errors import install_error_handlers
from gridex.core.jobs import JobRunner
from gridex.core.middleware import (
    DOCS_ASSETS,
    BodyLimitMiddleware,
    RateLimitMiddleware,
    RequestContextMiddleware,
    UnhandledErrorMiddleware,
)
from gridex.core.pubsub import create_pubsub
from gridex.core.ratelimit import RateLimiter
from gridex.core.runtime import Runtime
from gridex.core.schemas import error_responses
from gridex.core.security import PasswordHasher
from gridex.demo import create_community
from gridex.graphql.routes import graphql_router
from gridex.jobs import register_jobs
from gridex.ledger.routes import installations_router, ledger_admin_router, wallet_router
from gridex.ledger.service import WALLET_CHAIN_VIEW
from gridex.market.regions import band_prices
from gridex.market.repository import cleared_prices
from gridex.market.routes import market_router
from gridex.meters.mqtt import MqttBridge
from gridex.meters.repository import owns_meter
from gridex.meters.routes import meters_router, readings_router, telemetry_router
from gridex.notifications.jobs import EXTRA_FEEDS
from gridex.notifications.routes import notifications_router
from gridex.payments.routes import (
    payments_admin_router,
    payments_router,
    wallet_payments_router,
)
from gridex.realtime.routes import ws_router
from gridex.realtime.service import close_hub
from gridex.regions.service import ensure_regions
from gridex.runtimeconfig import service as runtimeconfig
from gridex.tariffs.reports import CLEARING_PRICES
from gridex.tariffs.routes import tariffs_router
from gridex.tariffs.service import DEFAULT_PRICES
from gridex.users.routes import me_router, users_router
from gridex.web.routes import install_web


def build_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    db = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pre_ping=settings.db_pre_ping,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pre_ping_idle_seconds=settings.db_pre_ping_idle_seconds,
    )
    runtime = Runtime(
        settings=settings,
        db=db,
        clock=clock,
        hasher=PasswordHasher(
            time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
        ),
        limiter=RateLimiter(settings),
        jobs=JobRunner(db, clock),
        pubsub=create_pubsub(settings.redis_url),
    )
    # `runtime.settings` becomes the environment's settings with the admins' runtime changes.
    runtimeconfig.install(runtime)
    runtime.jobs.before_each(lambda: runtimeconfig.refresh(runtime))
    # What a lower domain needs from a higher one, handed down here at the edge.
    runtime.extensions[WALLET_CHAIN_VIEW] = wallet_chain_fields
    runtime.extensions[OWNS_METER] = owns_meter
    runtime.extensions[DEMO_COMMUNITY] = partial(create_community, refuse_existing=True)
    runtime.extensions[OUTSTANDING_INVOICES] = outstanding_invoices
    runtime.extensions[OVERDUE_INVOICES] = overdue_invoices
    runtime.extensions[DUE_INVOICES] = unpaid_by_user
    runtime.extensions[EXTRA_FEEDS] = [INVOICES_ISSUED]
    runtime.extensions[DEFAULT_PRICES] = band_prices
    runtime.extensions[CLEARING_PRICES] = cleared_prices
    register_jobs(runtime)
    return runtime


# The errors any API route may answer; routes add their own codes.
API_ERRORS = error_responses(401, 403, 404, 422, 429, 500, 503)


async def prepare(rt: Runtime) -> None:
    """What a process does once before it serves or runs jobs: create the configured regions."""
    await ensure_regions(rt.db, rt.settings.regions, rt.clock.now())


async def _current_settings(rt: RuntimeDep) -> None:
    """Every request sees the runtime settings in force (reloaded when changed)."""
    await runtimeconfig.refresh(rt)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or (runtime.settings if runtime else get_settings())
    rt = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await prepare(rt)
        if settings.run_jobs:
            rt.jobs.start()
        mqtt = MqttBridge(rt) if settings.mqtt_url else None
        if mqtt is not None:
            await mqtt.start()
        try:
            async with runtimeconfig.watching(rt):
                yield
        finally:
            if mqtt is not None:
                await mqtt.stop()
            rt.jobs.shutdown()
            await close_hub(rt)
            await close_chain(rt)
            await cache_of(rt).close()
            await rt.pubsub.close()
            await rt.db.dispose()

    # Swagger UI (/docs) and ReDoc (/redoc) load their scripts from the installed package, not a
    # CDN, so the API explorer works offline and behind strict firewalls.
    app = FastAPIOffline(
        title="Gridex",
        version=__version__,
        description="Peer-to-peer energy exchange for community and campus microgrids.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        favicon_url=f"{DOCS_ASSETS}/favicon.png",
        # Operation ids are the route functions' names (`login`, `place_order`): what client
        # generators turn into method names.
        generate_unique_id_function=lambda route: route.name,
        dependencies=[Depends(_current_settings)],
    )
    app.state.runtime = rt
    install_error_handlers(app)
    generate_document = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_defs(generate_document())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]

    _include_routes(app)
    app.include_router(graphql_router(rt), prefix="/graphql")
    # The web app at `/`, over the same public API; after the API so no API path is shadowed.
    install_web(app)
    _add_middleware(app, rt)
    return app


def _include_routes(app: FastAPI) -> None:
    # Routes are matched in the order they are included, one by one: the busiest paths first
    # (order entry), so that they do not pay for matching every other route before theirs.
    for router in (
        market_router,
        auth_router,
        me_router,
        users_router,
        departments_router,
        admin_router,
        system_router,
        meters_router,
        readings_router,
        telemetry_router,
        wallet_router,
        wallet_payments_router,
        payments_router,
        payments_admin_router,
        installations_router,
        ledger_admin_router,
        chain_router,
        chain_admin_router,
        analytics_router,
        dashboard_router,
        reports_router,
        alerts_router,
        notifications_router,
        tariffs_router,
        billing_router,
    ):
        app.include_router(router, prefix=API_PREFIX, responses=API_ERRORS)
    app.include_router(health_router, responses=error_responses(401, 422, 503))
    app.include_router(ws_router)


def _add_middleware(app: FastAPI, rt: Runtime) -> None:
    settings = rt.settings
    # Added innermost first: the request context wraps everything, so even a 413 or 429 carries
    # a request id, security headers and a metrics sample.
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(RateLimitMiddleware, runtime=rt)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "X-Request-ID",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "Retry-After",
            ],
        )
    app.add_middleware(RequestContextMiddleware, production=settings.env == "production")
    if settings.trusted_proxies:
        # Outermost, so that logs, rate limits and the audit trail see the client's address.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
