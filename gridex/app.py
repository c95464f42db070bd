"""The FastAPI application: one factory for ``gridex serve``, workers, tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware

from gridex import __version__
from gridex.admin.routes import admin_router, health_router, system_router
from gridex.auth.routes import router as auth_router
from gridex.core.clock import Clock, SystemClock
from gridex.core.config import API_PREFIX, Settings, get_settings
from gridex.core.db import Database
from gridex.core.errors import install_error_handlers
from gridex.core.jobs import JobRunner
from gridex.core.middleware import (
    BodyLimitMiddleware,
    RateLimitMiddleware,
    RequestContextMiddleware,
)
from gridex.core.ratelimit import RateLimiter
from gridex.core.runtime import Runtime
from gridex.core.security import PasswordHasher
from gridex.jobs import register_jobs
from gridex.users.routes import departments_router, me_router, users_router


def build_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    db = Database(settings.database_url)
    runtime = Runtime(
        settings=settings,
        db=db,
        clock=clock,
        hasher=PasswordHasher(
            time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
        ),
        limiter=RateLimiter(settings),
        jobs=JobRunner(db, clock),
    )
    register_jobs(runtime)
    return runtime


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or (runtime.settings if runtime else get_settings())
    rt = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.run_jobs:
            rt.jobs.start()
        try:
            yield
        finally:
            rt.jobs.shutdown()
            await rt.db.dispose()

    app = FastAPI(
        title="Gridex",
        version=__version__,
        description="Peer-to-peer energy exchange for community and campus microgrids.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    install_error_handlers(app)

    api = APIRouter(prefix=API_PREFIX)
    for router in (
        auth_router,
        me_router,
        users_router,
        departments_router,
        admin_router,
        system_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health_router)

    # Added innermost first: the request context wraps everything, so even a 413 or 429 carries
    # a request id, security headers and a metrics sample.
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
    return app
