"""Counters and single-use tokens hold when requests for one account arrive in parallel."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from gridex.auth.models import OtpCode, User
from gridex.core.runtime import Runtime
from tests.factories import API, PASSWORD, last_code, make_user, signed_in

WRONG = "Wrong-password-1"


async def test_parallel_wrong_passwords_all_count_and_lock(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await make_user(runtime)
    attempts = await asyncio.gather(
        *(
            client.post(f"{API}/auth/login", json={"username": account.username, "password": WRONG})
            for _ in range(9)
        )
    )
    codes = sorted(response.status_code for response in attempts)
    # Nine failures against a threshold of five: one of them locks the account.
    assert 423 in codes, codes
    assert set(codes) <= {401, 423}
    refused = await client.post(
        f"{API}/auth/login", json={"username": account.username, "password": PASSWORD}
    )
    assert refused.status_code == 423
    assert refused.json()["error"]["code"] == "ACCOUNT_LOCKED"
    async with runtime.db.sessionmaker() as session:
        user = await session.get(User, account.id)
        assert user is not None
        assert user.locked_until is not None


async def test_parallel_wrong_codes_spend_every_attempt(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    email = "race@example.org"
    registered = await client.post(
        f"{API}/auth/register",
        json={"username": "race", "email": email, "password": PASSWORD, "region": "north"},
    )
    assert registered.status_code == 201, registered.text
    code = await last_code(runtime, email)
    wrong = "000000" if code != "000000" else "111111"
    answers = await asyncio.gather(
        *(
            client.post(f"{API}/auth/verify-email", json={"email": email, "otp": wrong})
            for _ in range(5)
        )
    )
    assert [a.status_code for a in answers] == [422] * 5
    async with runtime.db.sessionmaker() as session:
        otp = (await session.scalars(select(OtpCode))).one()
        assert otp.attempts == 5
        assert otp.consumed_at is not None
    # Every attempt was spent, so the right code no longer works either.
    late = await client.post(f"{API}/auth/verify-email", json={"email": email, "otp": code})
    assert late.status_code == 422


async def test_parallel_refreshes_of_one_token_yield_one_pair(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await signed_in(client, runtime)
    answers = await asyncio.gather(
        *(
            client.post(f"{API}/auth/refresh", json={"refresh_token": account.refresh_token})
            for _ in range(8)
        )
    )
    succeeded = [a for a in answers if a.status_code == 200]
    assert len(succeeded) <= 1, [a.status_code for a in answers]
    assert all(a.status_code in (200, 401) for a in answers)
    # The token was presented again while it was being spent: that is reuse, so the session is
    # revoked and no child of the token works.
    for pair in succeeded:
        me = await client.get(
            f"{API}/me", headers={"Authorization": f"Bearer {pair.json()['access_token']}"}
        )
        child = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": pair.json()["refresh_token"]}
        )
        assert me.status_code == 401
        assert child.status_code == 401
