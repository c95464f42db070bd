from __future__ import annotations

from datetime import timedelta

import httpx

from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.factories import API, signed_in


async def test_api_key_lifecycle(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    account = await signed_in(client, runtime)
    created = await client.post(
        f"{API}/me/api-keys",
        json={"name": "roof meter", "scopes": ["readings:write", "meters:read"]},
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert secret.startswith("gdx_")
    assert body["scopes"] == ["meters:read", "readings:write"]

    listed = await client.get(f"{API}/me/api-keys", headers=account.headers)
    assert [k["name"] for k in listed.json()] == ["roof meter"]
    assert "key" not in listed.json()[0]
    assert secret not in listed.text

    validate = await client.get(f"{API}/auth/validate", headers={"X-API-Key": secret})
    assert validate.status_code == 200
    assert validate.json()["kind"] == "api_key"
    assert validate.json()["scopes"] == ["meters:read", "readings:write"]

    # An API key is not a user session: it cannot manage the account.
    assert (await client.get(f"{API}/me", headers={"X-API-Key": secret})).status_code == 403

    forged = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    assert (
        await client.get(f"{API}/auth/validate", headers={"X-API-Key": forged})
    ).status_code == 401

    revoked = await client.delete(f"{API}/me/api-keys/{body['id']}", headers=account.headers)
    assert revoked.status_code == 204
    after = await client.get(f"{API}/auth/validate", headers={"X-API-Key": secret})
    assert after.status_code == 401

    expiring = await client.post(
        f"{API}/me/api-keys",
        json={
            "name": "short",
            "scopes": ["meters:read"],
            "expires_at": (clock.now() + timedelta(hours=1)).isoformat(),
        },
        headers=account.headers,
    )
    short_key = expiring.json()["key"]
    assert (
        await client.get(f"{API}/auth/validate", headers={"X-API-Key": short_key})
    ).status_code == 200
    clock.advance(timedelta(hours=2))
    assert (
        await client.get(f"{API}/auth/validate", headers={"X-API-Key": short_key})
    ).status_code == 401


async def test_api_key_validation(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await signed_in(client, runtime)
    unknown_scope = await client.post(
        f"{API}/me/api-keys", json={"name": "x", "scopes": ["root"]}, headers=account.headers
    )
    assert unknown_scope.status_code == 422
    naive = await client.post(
        f"{API}/me/api-keys",
        json={"name": "x", "scopes": ["meters:read"], "expires_at": "2030-01-01T00:00:00"},
        headers=account.headers,
    )
    assert naive.status_code == 422


async def test_other_users_keys_are_not_found(client: httpx.AsyncClient, runtime: Runtime) -> None:
    owner = await signed_in(client, runtime)
    intruder = await signed_in(client, runtime)
    created = await client.post(
        f"{API}/me/api-keys", json={"name": "k", "scopes": ["meters:read"]}, headers=owner.headers
    )
    key_id = created.json()["id"]
    response = await client.delete(f"{API}/me/api-keys/{key_id}", headers=intruder.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    still = await client.get(f"{API}/me/api-keys", headers=owner.headers)
    assert still.json()[0]["revoked_at"] is None
