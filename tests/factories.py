"""Typed factory functions: accounts and signed-in clients through the public surface."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import base58
import httpx
from nacl.signing import SigningKey
from sqlalchemy import select

from gridex.auth.models import Role, User, UserStatus
from gridex.core.runtime import Runtime
from gridex.mail.models import EmailOutbox
from gridex.regions.service import ensure_regions

PASSWORD = "Correct-Horse-42"
API = "/api/v1"


@dataclass
class Account:
    id: uuid.UUID
    username: str
    email: str
    password: str
    access_token: str = ""
    refresh_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def make_user(
    rt: Runtime,
    *,
    role: Role = Role.prosumer,
    username: str | None = None,
    password: str = PASSWORD,
    verified: bool = True,
    region: str | None = "north",
    department: str | None = None,
) -> Account:
    """An account written straight to the database (fast), verified unless told otherwise."""
    username = username or f"{role.value}-{uuid.uuid4().hex[:8]}"
    email = f"{username}@example.org"
    now = rt.clock.now()
    async with rt.db.sessionmaker() as session:
        user = User(
            username=username,
            email=email,
            password_hash=rt.hasher.hash(password),
            role=role,
            status=UserStatus.active,
            email_verified_at=now if verified else None,
            region=region,
            department=department,
            profile_metadata={},
            department_metadata={},
            preferences={},
            created_at=now,
            updated_at=now,
        )
        session.add(user)
        await session.commit()
        return Account(user.id, username, email, password)


async def login(client: httpx.AsyncClient, account: Account) -> Account:
    response = await client.post(
        f"{API}/auth/login", json={"username": account.username, "password": account.password}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    account.access_token, account.refresh_token = body["access_token"], body["refresh_token"]
    return account


async def signed_in(
    client: httpx.AsyncClient, rt: Runtime, role: Role = Role.prosumer, **kwargs: object
) -> Account:
    return await login(client, await make_user(rt, role=role, **kwargs))  # type: ignore[arg-type]


async def last_code(rt: Runtime, email: str) -> str:
    """The 6-digit code of the newest email to ``email`` in the outbox."""
    async with rt.db.sessionmaker() as session:
        body = await session.scalar(
            select(EmailOutbox.body)
            .where(EmailOutbox.to_address == email)
            .order_by(EmailOutbox.created_at.desc())
            .limit(1)
        )
    assert body is not None, f"no email to {email}"
    match = re.search(r"\b(\d{6})\b", body)
    assert match is not None
    return match.group(1)


class Wallet:
    """An Ed25519 keypair standing in for a user's Solana wallet."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.address = base58.b58encode(bytes(self.key.verify_key)).decode()

    def sign(self, message: str) -> str:
        return base58.b58encode(self.key.sign(message.encode()).signature).decode()


async def new_region(rt: Runtime, prefix: str = "r") -> str:
    """A region of its own for a test that must not share one (regions exist only once made)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await ensure_regions(rt.db, [name], rt.clock.now())
    return name
