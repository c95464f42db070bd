from __future__ import annotations

from datetime import timedelta

import httpx

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.factories import API, PASSWORD, login, make_user, signed_in


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/auth/login", json={"username": username, "password": password})


async def test_unknown_user_and_wrong_password_look_the_same(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await make_user(runtime)
    unknown = await _login(client, "nobody-here", PASSWORD)
    wrong = await _login(client, account.username, "Wrong-password-1")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["error"]["code"] == wrong.json()["error"]["code"] == "INVALID_CREDENTIALS"
    assert unknown.json()["error"]["message"] == wrong.json()["error"]["message"]


async def test_lockout_after_five_failures_and_expiry(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    account = await make_user(runtime)
    for _ in range(4):
        response = await _login(client, account.username, "Wrong-password-1")
        assert response.status_code == 401
    fifth = await _login(client, account.username, "Wrong-password-1")
    assert fifth.status_code == 423
    assert fifth.json()["error"]["code"] == "ACCOUNT_LOCKED"
    # The sixth attempt is refused even with the right password.
    sixth = await _login(client, account.username, PASSWORD)
    assert sixth.status_code == 423
    assert "locked_until" in sixth.json()["error"]["details"]

    clock.advance(timedelta(minutes=29))
    assert (await _login(client, account.username, PASSWORD)).status_code == 423
    clock.advance(timedelta(minutes=2))
    after = await _login(client, account.username, PASSWORD)
    assert after.status_code == 200, after.text

    # A success resets the count: four more failures do not lock.
    for _ in range(4):
        assert (await _login(client, account.username, "Wrong-password-1")).status_code == 401
    assert (await _login(client, account.username, PASSWORD)).status_code == 200


async def test_refresh_rotates_and_reuse_revokes_family(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await signed_in(client, runtime)
    first_refresh = account.refresh_token
    rotated = await client.post(f"{API}/auth/refresh", json={"refresh_token": first_refresh})
    assert rotated.status_code == 200
    pair = rotated.json()
    assert pair["refresh_token"] != first_refresh
    new_headers = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await client.get(f"{API}/me", headers=new_headers)).status_code == 200

    # Presenting the spent token again is theft or a bug: the whole family is revoked.
    reuse = await client.post(f"{API}/auth/refresh", json={"refresh_token": first_refresh})
    assert reuse.status_code == 401
    assert reuse.json()["error"]["code"] == "INVALID_TOKEN"
    assert (await client.get(f"{API}/me", headers=new_headers)).status_code == 401
    descendant = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert descendant.status_code == 401

    admin = await signed_in(client, runtime, Role.admin)
    logs = await client.get(
        f"{API}/admin/audit-logs",
        params={"action": "auth.refresh_reuse_detected"},
        headers=admin.headers,
    )
    assert logs.json()["total"] == 1


async def test_expired_access_token(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    account = await signed_in(client, runtime)
    clock.advance(timedelta(minutes=16))
    response = await client.get(f"{API}/me", headers=account.headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_TOKEN"
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert refreshed.status_code == 200


async def test_validate_logout_and_logout_all(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await make_user(runtime)
    one = await login(client, account)
    one_headers = dict(one.headers)
    two = await _login(client, account.username, PASSWORD)
    two_headers = {"Authorization": f"Bearer {two.json()['access_token']}"}

    valid = await client.get(f"{API}/auth/validate", headers=one_headers)
    assert valid.status_code == 200
    assert valid.json()["kind"] == "access_token"
    assert valid.json()["user_id"] == str(account.id)

    assert (await client.post(f"{API}/auth/logout", headers=one_headers)).status_code == 200
    assert (await client.get(f"{API}/auth/validate", headers=one_headers)).status_code == 401
    spent = await client.post(f"{API}/auth/refresh", json={"refresh_token": one.refresh_token})
    assert spent.status_code == 401
    assert (await client.get(f"{API}/auth/validate", headers=two_headers)).status_code == 200

    three = await _login(client, account.username, PASSWORD)
    three_headers = {"Authorization": f"Bearer {three.json()['access_token']}"}
    assert (await client.post(f"{API}/auth/logout-all", headers=two_headers)).status_code == 200
    for headers in (two_headers, three_headers):
        assert (await client.get(f"{API}/me", headers=headers)).status_code == 401


async def test_missing_and_garbage_tokens(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"{API}/me")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
    garbage = await client.get(f"{API}/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert garbage.json()["error"]["code"] == "INVALID_TOKEN"


async def test_change_password_revokes_other_sessions(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await signed_in(client, runtime)
    other = await _login(client, account.username, PASSWORD)
    other_headers = {"Authorization": f"Bearer {other.json()['access_token']}"}
    wrong = await client.post(
        f"{API}/auth/password/change",
        json={"current_password": "Not-the-one-1", "new_password": "Brand-New-Pass-7"},
        headers=account.headers,
    )
    assert wrong.status_code == 401
    changed = await client.post(
        f"{API}/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "Brand-New-Pass-7"},
        headers=account.headers,
    )
    assert changed.status_code == 200
    assert (await client.get(f"{API}/me", headers=account.headers)).status_code == 200
    assert (await client.get(f"{API}/me", headers=other_headers)).status_code == 401
    assert (await _login(client, account.username, PASSWORD)).status_code == 401
    assert (await _login(client, account.username, "Brand-New-Pass-7")).status_code == 200


async def test_forgot_and_reset_password(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from tests.factories import last_code

    account = await signed_in(client, runtime)
    unknown = await client.post(f"{API}/auth/password/forgot", json={"email": "nobody@example.org"})
    known = await client.post(f"{API}/auth/password/forgot", json={"email": account.email})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()

    code = await last_code(runtime, account.email)
    bad = await client.post(
        f"{API}/auth/password/reset",
        json={
            "email": account.email,
            "otp": "999999" if code != "999999" else "888888",
            "new_password": "Reset-Pass-2025",
        },
    )
    assert bad.status_code == 422
    reset = await client.post(
        f"{API}/auth/password/reset",
        json={"email": account.email, "otp": code, "new_password": "Reset-Pass-2025"},
    )
    assert reset.status_code == 200
    # Existing sessions end; the code cannot be used twice.
    assert (await client.get(f"{API}/me", headers=account.headers)).status_code == 401
    again = await client.post(
        f"{API}/auth/password/reset",
        json={"email": account.email, "otp": code, "new_password": "Another-Pass-2026"},
    )
    assert again.status_code == 422
    assert (await _login(client, account.username, "Reset-Pass-2025")).status_code == 200


async def test_suspended_user_cannot_sign_in(client: httpx.AsyncClient, runtime: Runtime) -> None:
    admin = await signed_in(client, runtime, Role.admin)
    account = await signed_in(client, runtime)
    suspended = await client.post(
        f"{API}/users/{account.id}/suspend",
        json={"reason": "meter tampering"},
        headers=admin.headers,
    )
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended"
    me = await client.get(f"{API}/me", headers=account.headers)
    assert me.status_code == 401
    response = await _login(client, account.username, PASSWORD)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ACCOUNT_SUSPENDED"
    activated = await client.post(f"{API}/users/{account.id}/activate", headers=admin.headers)
    assert activated.json()["status"] == "active"
    assert (await _login(client, account.username, PASSWORD)).status_code == 200
