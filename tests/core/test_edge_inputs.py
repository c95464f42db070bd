"""Input a client can send at the edges of every range: a 4xx in the error shape, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from gridex.core.runtime import Runtime
from tests.conftest import TEST_SECRET
from tests.factories import API, signed_in


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/market/epochs/0001-01-01T00:00:00Z", {}),
        ("GET", "/market/epochs/9999-12-31T23:45:00Z", {}),
        ("GET", "/market/history", {"params": {"from": "0001-01-01T00:00:00Z"}}),
        ("GET", "/market/history", {"params": {"to": "9999-12-31T23:45:00+14:00"}}),
        ("GET", "/market/trades", {"params": {"page": 2**63 - 1}}),
        ("GET", "/wallet/transactions", {"params": {"page": 2**63}}),
        ("POST", "/wallet/topups", {"json": {"amount": "1_000"}}),
        ("POST", "/wallet/topups", {"json": {"amount": "1." + "0" * 30}}),
        ("POST", "/wallet/topups", {"json": {"amount": "\u0661\u0662"}}),
        ("PATCH", "/me", {"json": {"first_name": "a\x00b"}}),
        ("PATCH", "/me", {"json": {"metadata": {"k": "v\x00"}}}),
        ("PATCH", "/me", {"json": {"metadata": {"blob": "x" * (64 * 1024)}}}),
        ("PATCH", "/me", {"json": {"metadata": _nested(200)}}),
    ],
)
async def test_edge_input_is_a_validation_error(
    client: httpx.AsyncClient, runtime: Runtime, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    account = await signed_in(client, runtime)
    response = await client.request(method, f"{API}{path}", headers=account.headers, **kwargs)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_nul_in_an_unauthenticated_login_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/auth/login", json={"username": "a\x00b", "password": "x\x00y"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_a_token_that_expires_in_the_far_future_is_invalid_not_an_error(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await signed_in(client, runtime)
    forged = jwt.encode(
        {"sub": str(account.id), "exp": 10**20, "sid": "x", "role": "admin", "jti": "j"},
        TEST_SECRET,
        algorithm="HS256",
    )
    response = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_TOKEN"


async def test_reasonable_metadata_is_kept(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await signed_in(client, runtime)
    metadata = {"roof": {"tilt": 30, "panels": ["a", "b"]}, "note": "south-facing"}
    response = await client.patch(f"{API}/me", json={"metadata": metadata}, headers=account.headers)
    assert response.status_code == 200
    assert response.json()["metadata"] == metadata


async def test_a_body_that_is_not_utf8_is_422(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await signed_in(client, runtime)
    response = await client.patch(
        f"{API}/me",
        content=b'{"first_name": "\xff\xfe"}',
        headers={**account.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
