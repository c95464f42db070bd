from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select

from gridex.audit.models import AuditLog
from gridex.auth.models import User
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.mail.models import EmailOutbox
from tests.factories import API, PASSWORD, last_code

REGISTER = {
    "username": "Alice.Sun",
    "email": "Alice@Example.org",
    "password": PASSWORD,
    "first_name": "Alice",
    "department": "engineering",
    "region": "north",
}


async def test_register_verify_login(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.post(f"{API}/auth/register", json=REGISTER)
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["username"] == "alice.sun"
    assert user["email"] == "alice@example.org"
    assert user["role"] == "prosumer"
    assert user["email_verified"] is False
    assert "password" not in response.text
    assert "password_hash" not in user

    login = {"username": "alice.sun", "password": PASSWORD}
    refused = await client.post(f"{API}/auth/login", json=login)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "EMAIL_NOT_VERIFIED"

    code = await last_code(runtime, "alice@example.org")
    verified = await client.post(
        f"{API}/auth/verify-email", json={"email": "alice@example.org", "otp": code}
    )
    assert verified.status_code == 200
    assert verified.json()["email_verified"] is True

    by_email = await client.post(
        f"{API}/auth/login", json={"email": "ALICE@example.org", "password": PASSWORD}
    )
    assert by_email.status_code == 200, by_email.text
    tokens = by_email.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 15 * 60
    assert tokens["user"]["username"] == "alice.sun"

    me = await client.get(
        f"{API}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["department"] == "engineering"


async def test_a_taken_username_conflicts_without_saying_whether_the_email_is_taken(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post(f"{API}/auth/register", json=REGISTER)).status_code == 201
    again = await client.post(f"{API}/auth/register", json=REGISTER)
    assert again.status_code == 409
    assert again.json()["error"]["details"]["fields"] == ["username"]
    assert "email" not in again.json()["error"]["message"]


async def test_a_taken_email_answers_like_a_new_account_and_tells_its_owner(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await client.post(f"{API}/auth/register", json=REGISTER)
    assert first.status_code == 201
    fresh = await client.post(
        f"{API}/auth/register",
        json={**REGISTER, "username": "fresh", "email": "fresh@example.org"},
    )
    taken = await client.post(
        f"{API}/auth/register", json={**REGISTER, "username": "other", "email": "ALICE@example.org"}
    )
    assert taken.status_code == fresh.status_code == 201
    assert sorted(taken.json()) == sorted(fresh.json())
    assert taken.json()["username"] == "other"
    assert taken.json()["id"] not in (first.json()["id"], fresh.json()["id"])
    async with runtime.db.sessionmaker() as session:
        usernames = set(await session.scalars(select(User.username)))
        emails = list(
            await session.scalars(
                select(EmailOutbox).where(EmailOutbox.to_address == "alice@example.org")
            )
        )
    assert usernames == {"alice.sun", "fresh"}
    assert [e.kind for e in emails] == ["verify_email", "register_attempt"]
    # The phantom account cannot be verified or signed in to, like a wrong code or password.
    login = await client.post(f"{API}/auth/login", json={"username": "other", "password": PASSWORD})
    assert login.status_code == 401


async def test_unknown_names_lock_like_accounts(client: httpx.AsyncClient) -> None:
    body = {"username": "nobody-at-all", "password": "Wrong-password-1"}
    codes = [(await client.post(f"{API}/auth/login", json=body)).status_code for _ in range(6)]
    assert codes == [401, 401, 401, 401, 423, 423]
    locked = await client.post(f"{API}/auth/login", json=body)
    assert locked.json()["error"]["code"] == "ACCOUNT_LOCKED"
    assert "locked_until" in locked.json()["error"]["details"]


async def test_forgot_password_for_an_unknown_address_leaves_the_same_trace(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    answer = await client.post(f"{API}/auth/password/forgot", json={"email": "ghost@example.org"})
    assert answer.status_code == 202
    async with runtime.db.sessionmaker() as session:
        [entry] = await session.scalars(
            select(AuditLog).where(AuditLog.action == "auth.password_forgot")
        )
    assert entry.outcome == "failure"
    assert entry.details == {"reason": "unknown_account"}


async def test_password_policy(client: httpx.AsyncClient) -> None:
    for password in ("short1A", "alllowercaseletters", "alice.sun"):
        response = await client.post(
            f"{API}/auth/register", json={**REGISTER, "password": password}
        )
        assert response.status_code == 422, password
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    same_as_name = await client.post(
        f"{API}/auth/register",
        json={**REGISTER, "username": "longusername1", "password": "LongUserName1"},
    )
    assert same_as_name.status_code == 422


async def test_registration_cannot_escalate_role(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for role in ("admin", "operator"):
        response = await client.post(f"{API}/auth/register", json={**REGISTER, "role": role})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "FORBIDDEN"
    consumer = await client.post(f"{API}/auth/register", json={**REGISTER, "role": "consumer"})
    assert consumer.json()["role"] == "consumer"
    mass_assign = await client.post(
        f"{API}/auth/register", json={**REGISTER, "username": "x-user", "status": "active"}
    )
    assert mass_assign.status_code == 422


async def test_wrong_otp_counts_attempts_then_dies(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.post(f"{API}/auth/register", json=REGISTER)
    code = await last_code(runtime, "alice@example.org")
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1, 0):
        response = await client.post(
            f"{API}/auth/verify-email", json={"email": "alice@example.org", "otp": wrong}
        )
        assert response.status_code == 422
        assert response.json()["error"]["details"]["attempts_left"] == left
    # The sixth attempt fails even with the right code: the code is spent.
    sixth = await client.post(
        f"{API}/auth/verify-email", json={"email": "alice@example.org", "otp": code}
    )
    assert sixth.status_code == 422


async def test_expired_otp_and_resend(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    await client.post(f"{API}/auth/register", json=REGISTER)
    code = await last_code(runtime, "alice@example.org")
    clock.advance(timedelta(minutes=11))
    expired = await client.post(
        f"{API}/auth/verify-email", json={"email": "alice@example.org", "otp": code}
    )
    assert expired.status_code == 422

    resent = await client.post(f"{API}/auth/resend-otp", json={"email": "alice@example.org"})
    assert resent.status_code == 202
    new_code = await last_code(runtime, "alice@example.org")
    ok = await client.post(
        f"{API}/auth/verify-email", json={"email": "alice@example.org", "otp": new_code}
    )
    assert ok.status_code == 200


async def test_resend_and_verify_do_not_reveal_accounts(client: httpx.AsyncClient) -> None:
    unknown = await client.post(f"{API}/auth/resend-otp", json={"email": "nobody@example.org"})
    assert unknown.status_code == 202
    verify = await client.post(
        f"{API}/auth/verify-email", json={"email": "nobody@example.org", "otp": "123456"}
    )
    assert verify.status_code == 422
    assert verify.json()["error"]["message"] == "The code is invalid or has expired"


async def test_naive_input_and_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/auth/register",
        content=b'{"username": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["message"] == "The request body is not valid JSON"
    assert body["request_id"]
