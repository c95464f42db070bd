from __future__ import annotations

import os

import httpx
import pytest

from gridex.app import build_runtime, create_app
from gridex.core.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import API, make_user, signed_in


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 1024}])
async def test_oversize_body_is_413_before_reading_it(client: httpx.AsyncClient) -> None:
    declared = await client.post(
        f"{API}/auth/register", content=b"x" * 2048, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    chunks_sent = 0

    async def stream():  # type: ignore[no-untyped-def]
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"y" * 512

    streamed = await client.post(
        f"{API}/auth/register", content=stream(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_anonymous": "3/minute",
            "rate_limit_auth": "2/minute",
        }
    ],
)
async def test_rate_limits_anonymous_and_auth(client: httpx.AsyncClient) -> None:
    statuses = []
    for _ in range(3):
        response = await client.get(f"{API}/departments/none")
        statuses.append(response.status_code)
        assert response.headers["ratelimit-limit"] == "3"
    limited = await client.get(f"{API}/departments/none")
    assert statuses == [404, 404, 404]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_auth": "2/minute",
            "rate_limit_anonymous": "100/minute",
        }
    ],
)
async def test_login_has_the_stricter_auth_limit(client: httpx.AsyncClient) -> None:
    body = {"username": "someone", "password": "Whatever-123"}
    codes = [(await client.post(f"{API}/auth/login", json=body)).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_default": "2/minute",
            "rate_limit_admin": "50/minute",
            "rate_limit_auth": "100/minute",
        }
    ],
)
async def test_limits_are_per_user_and_role(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from gridex.auth.models import Role

    user = await signed_in(client, runtime)
    other = await signed_in(client, runtime)
    admin = await signed_in(client, runtime, Role.admin)
    codes = [(await client.get(f"{API}/me", headers=user.headers)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert (await client.get(f"{API}/me", headers=other.headers)).status_code == 200
    admin_codes = {
        (await client.get(f"{API}/me", headers=admin.headers)).status_code for _ in range(5)
    }
    assert admin_codes == {200}


async def test_redis_rate_limit_store(database_url: str) -> None:
    redis_url = os.environ.get("GRIDEX_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("GRIDEX_TEST_REDIS_URL is not set")
    settings = make_settings(
        database_url, redis_url=redis_url, rate_limit_enabled=True, rate_limit_anonymous="2/minute"
    )
    rt = build_runtime(settings)
    await rt.limiter.reset()
    assert await rt.limiter.check()
    app = create_app(runtime=rt)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        codes = [(await http.get(f"{API}/departments/x")).status_code for _ in range(3)]
        health = await http.get("/health")
    assert codes == [404, 404, 429]
    assert health.json()["checks"]["redis"] == "ok"
    # A second process sharing the Redis store sees the same counts.
    other = build_runtime(settings)
    app2 = create_app(runtime=other)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app2), base_url="http://test"
    ) as http:
        assert (await http.get(f"{API}/departments/x")).status_code == 429
    await rt.limiter.reset()
    await rt.db.dispose()
    await other.db.dispose()


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": ["https://app.example.org"]}])
async def test_cors(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        f"{API}/auth/login",
        headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.org"
    other = await client.get("/health/live", headers={"Origin": "https://evil.example.org"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_auth": "3/minute",
            "rate_limit_anonymous": "100/minute",
        }
    ],
)
async def test_auth_limit_also_holds_per_account_across_ips(runtime: Runtime) -> None:
    app = create_app(runtime=runtime)
    body = {"username": "target-account", "password": "Guessing-123"}
    codes = []
    for i in range(4):
        transport = httpx.ASGITransport(app=app, client=(f"10.0.0.{i + 1}", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            codes.append((await http.post(f"{API}/auth/login", json=body)).status_code)
    # Each IP made one attempt; the account itself hit its limit.
    assert codes == [401, 401, 401, 429]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_anonymous": "3/minute",
            "rate_limit_default": "1000/minute",
        }
    ],
)
async def test_made_up_api_keys_share_their_ip_bucket(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    codes = []
    for i in range(4):
        fake = f"gdx_{i:012x}_{'x' * 43}"
        codes.append(
            (await client.get(f"{API}/auth/validate", headers={"X-API-Key": fake})).status_code
        )
    assert codes == [401, 401, 401, 429]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_anonymous": "2/minute",
            "rate_limit_ingest": "100/minute",
            "rate_limit_default": "100/minute",
        }
    ],
)
async def test_a_real_key_gets_its_own_bucket_once_it_authenticated(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await signed_in(client, runtime)
    created = await client.post(
        f"{API}/me/api-keys", json={"name": "k", "scopes": ["meters:read"]}, headers=account.headers
    )
    key = created.json()["key"]
    codes = [
        (await client.get(f"{API}/auth/validate", headers={"X-API-Key": key})).status_code
        for _ in range(5)
    ]
    assert codes == [200] * 5
    last = await client.get(f"{API}/auth/validate", headers={"X-API-Key": key})
    assert last.headers["ratelimit-limit"] == "100"


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limit_enabled": True, "rate_limit_anonymous": "2/minute"}]
)
async def test_forwarded_for_is_ignored_from_untrusted_clients(client: httpx.AsyncClient) -> None:
    codes = [
        (
            await client.get(
                f"{API}/departments/none", headers={"X-Forwarded-For": f"203.0.113.{i}"}
            )
        ).status_code
        for i in range(3)
    ]
    assert codes == [404, 404, 429]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_anonymous": "2/minute",
            "trusted_proxies": ["127.0.0.0/8"],
        }
    ],
)
async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    client: httpx.AsyncClient,
) -> None:
    codes = [
        (
            await client.get(
                f"{API}/departments/none", headers={"X-Forwarded-For": f"203.0.113.{i}"}
            )
        ).status_code
        for i in range(3)
    ]
    assert codes == [404, 404, 404]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_auth": "2/minute",
            "rate_limit_anonymous": "100/minute",
            "trusted_proxies": ["127.0.0.1"],
        }
    ],
)
async def test_username_and_email_of_one_account_share_the_login_limit(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await make_user(runtime)
    codes = []
    # Each attempt from another address, so that only the per-account limit can refuse.
    for i, name in enumerate([account.username, account.email, account.username]):
        response = await client.post(
            f"{API}/auth/login",
            json={"username": name, "password": "Wrong-password-1"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        codes.append(response.status_code)
    assert codes == [401, 401, 429]


def test_origins_and_proxies_read_as_comma_separated_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gridex.core.config import Settings

    monkeypatch.setenv("GRIDEX_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("GRIDEX_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    monkeypatch.setenv("GRIDEX_TRUSTED_PROXIES", "not-an-address")
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(_env_file=None)  # type: ignore[call-arg]
