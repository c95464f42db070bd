from __future__ import annotations

import httpx
import pytest

from gridex.app import create_app
from gridex.auth.models import Role
from gridex.core.config import InsecureConfiguration, Settings
from gridex.core.runtime import Runtime
from tests.factories import API, make_user, signed_in


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "not_configured"
    assert body["timestamp"].endswith("Z")
    assert (await client.get("/health/live")).json() == {"status": "alive"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200


async def test_ready_is_503_when_the_database_is_down(runtime: Runtime) -> None:
    broken = runtime.settings.model_copy(
        update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}
    )
    from gridex.app import build_runtime

    rt = build_runtime(broken, runtime.clock)
    app = create_app(runtime=rt)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        ready = await http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        health = await http.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
    await rt.db.dispose()


async def test_metrics_count_requests_per_route(client: httpx.AsyncClient) -> None:
    await client.get("/health/live")
    await client.get(f"{API}/users/123")  # 401, counted under its route template
    text = (await client.get("/metrics")).text
    assert 'gridex_http_requests_total{method="GET",route="/health/live",status="200"}' in text
    assert 'route="/api/v1/users/{user_id}",status="401"' in text
    assert "gridex_http_request_duration_seconds_bucket" in text


async def test_metrics_token(runtime: Runtime) -> None:
    rt = runtime
    rt.settings.metrics_token = "scrape-secret"
    app = create_app(runtime=rt)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        assert (await http.get("/metrics")).status_code == 401
        ok = await http.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200


async def test_request_id_and_security_headers(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert generated.headers["x-request-id"] != "bad id\twith spaces"
    assert len(generated.headers["x-request-id"]) == 32
    assert generated.headers["x-content-type-options"] == "nosniff"
    assert generated.headers["x-frame-options"] == "DENY"
    error = await client.get(f"{API}/me", headers={"X-Request-ID": "trace-9"})
    assert error.json()["request_id"] == "trace-9"


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"{API}/no/such/thing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert missing.json()["request_id"]
    wrong_method = await client.put("/health/live")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_unhandled_exception_leaks_nothing(runtime: Runtime) -> None:
    app = create_app(runtime=runtime)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret database password is hunter2")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
    ) as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "INTERNAL_ERROR",
        "message": "Internal error",
        "details": {},
    }
    assert "hunter2" not in response.text


async def test_system_info_is_admin_only_and_has_no_secrets(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    prosumer = await signed_in(client, runtime)
    assert (await client.get(f"{API}/system/info", headers=prosumer.headers)).status_code == 403
    info = await client.get(f"{API}/system/info", headers=admin.headers)
    assert info.status_code == 200
    body = info.json()
    assert body["backends"]["database"] in ("sqlite", "postgresql")
    assert body["environment"] == "test"
    assert runtime.settings.secret_key not in info.text
    assert "email_delivery" in body["jobs"]


async def test_outbox_lists_emails(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    await client.post(
        f"{API}/auth/register",
        json={"username": "newbie", "email": "newbie@example.org", "password": "Sunny-Roof-99"},
    )
    outbox = await client.get(
        f"{API}/admin/outbox", params={"to": "newbie@example.org"}, headers=admin.headers
    )
    [email] = outbox.json()["items"]
    assert email["kind"] == "verify_email"
    assert email["status"] == "logged"


def test_production_refuses_a_weak_secret_or_no_mail_transport() -> None:
    with pytest.raises(InsecureConfiguration, match="built-in default"):
        Settings(_env_file=None, env="production").check_production_safety()  # type: ignore[call-arg]
    with pytest.raises(InsecureConfiguration, match="at least 32"):
        Settings(_env_file=None, env="production", secret_key="short").check_production_safety()  # type: ignore[call-arg]
    with pytest.raises(InsecureConfiguration, match="GRIDEX_SMTP_URL"):
        Settings(_env_file=None, env="production", secret_key="x" * 40).check_production_safety()  # type: ignore[call-arg]
    Settings(  # type: ignore[call-arg]
        _env_file=None, env="production", secret_key="x" * 40, smtp_url="smtp://mail:25"
    ).check_production_safety()
    Settings(_env_file=None, env="development").check_production_safety()  # type: ignore[call-arg]


async def test_bola_other_users_are_not_reachable_by_prosumers(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    prosumer = await signed_in(client, runtime)
    victim = await make_user(runtime)
    for method, path in (
        ("GET", f"{API}/users/{victim.id}"),
        ("GET", f"{API}/users/{victim.id}/activity"),
        ("PATCH", f"{API}/users/{victim.id}"),
        ("DELETE", f"{API}/users/{victim.id}"),
    ):
        response = await client.request(
            method, path, headers=prosumer.headers, json={} if method == "PATCH" else None
        )
        assert response.status_code == 403, (method, path)


@pytest.mark.parametrize(
    "settings_overrides", [{"env": "production", "smtp_url": "smtp://127.0.0.1:1"}]
)
async def test_production_outbox_withholds_bodies(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    await client.post(
        f"{API}/auth/register",
        json={"username": "newbie", "email": "newbie@example.org", "password": "Sunny-Roof-99"},
    )
    outbox = await client.get(
        f"{API}/admin/outbox", params={"to": "newbie@example.org"}, headers=admin.headers
    )
    [email] = outbox.json()["items"]
    assert email["kind"] == "verify_email"
    assert email["status"] == "pending"
    assert email["body"] is None
