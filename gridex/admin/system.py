"""Health checks and the description of the running deployment."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from gridex.chain.views import health as chain_health
from gridex.core.runtime import Runtime


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def backends(rt: Runtime) -> dict[str, str]:
    s = rt.settings
    return {
        "database": rt.db.engine.dialect.name,
        "pubsub": "redis" if s.redis_url else "in-process",
        "rate_limit_store": "redis" if s.redis_url else "memory",
        "telemetry": "mqtt" if s.mqtt_url else "http",
        "email": "smtp" if s.smtp_url else "outbox-log",
        "jobs": "in-process" if s.run_jobs else "external workers",
    }


def config_summary(rt: Runtime) -> dict[str, object]:
    s = rt.settings
    return {
        "database_url": _redact(s.database_url),
        "redis_url": _redact(s.redis_url) if s.redis_url else None,
        "mqtt_url": _redact(s.mqtt_url) if s.mqtt_url else None,
        "smtp_url": _redact(s.smtp_url) if s.smtp_url else None,
        "currency": s.currency,
        "access_token_minutes": s.access_token_minutes,
        "refresh_token_days": s.refresh_token_days,
        "lockout_threshold": s.lockout_threshold,
        "lockout_minutes": s.lockout_minutes,
        "rate_limit_enabled": s.rate_limit_enabled,
        "rate_limits": {
            "anonymous": s.rate_limit_anonymous,
            "auth": s.rate_limit_auth,
            "default": s.rate_limit_default,
            "admin": s.rate_limit_admin,
            "ingest": s.rate_limit_ingest,
        },
        "max_body_bytes": s.max_body_bytes,
        "cors_origins": s.cors_origins,
    }


async def _tcp_check(url: str, default_port: int) -> str:
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or default_port),
            timeout=1.0,
        )
    except (OSError, TimeoutError):
        return "error"
    writer.close()
    await writer.wait_closed()
    return "ok"


async def check_database(rt: Runtime) -> str:
    try:
        await asyncio.wait_for(rt.db.ping(), timeout=3.0)
    except Exception:
        return "error"
    return "ok"


async def checks(rt: Runtime) -> dict[str, str]:
    s = rt.settings
    result = {"database": await check_database(rt)}
    if s.redis_url:
        try:
            ok = await asyncio.wait_for(rt.limiter.check(), timeout=2.0)
        except Exception:
            ok = False
        result["redis"] = "ok" if ok else "error"
    else:
        result["redis"] = "not_configured"
    result["mqtt"] = await _tcp_check(s.mqtt_url, 1883) if s.mqtt_url else "not_configured"
    result["chain"] = await chain_health(rt)
    result["jobs"] = "running" if rt.jobs.running else ("stopped" if s.run_jobs else "external")
    return result


def overall(result: dict[str, str]) -> str:
    if result["database"] != "ok":
        return "unhealthy"
    if any(value in ("error", "stopped") for value in result.values()):
        return "degraded"
    return "healthy"
