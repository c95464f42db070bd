"""Accounts created from the command line: the first admin, and the demo community."""

from __future__ import annotations

import re
import uuid

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import select

from gridex.audit.service import record
from gridex.auth.models import Role, User, UserStatus
from gridex.auth.schemas import USERNAME_PATTERN
from gridex.auth.service import check_password_policy
from gridex.core.clock import SystemClock
from gridex.core.config import Settings
from gridex.core.db import Database
from gridex.core.errors import ValidationFailed
from gridex.core.security import PasswordHasher
from gridex.regions.service import ensure_regions, get_region, region_names

DEMO_PASSWORD = "gridex-demo-2025"
DEMO_REGION = "campus-north"
DEMO_PEOPLE = (
    ("admin", Role.admin, "Ada", "Admin", "operations"),
    ("operator", Role.operator, "Otto", "Operator", "operations"),
    ("alice", Role.prosumer, "Alice", "Sun", "engineering"),
    ("bob", Role.prosumer, "Bob", "Roof", "engineering"),
    ("carol", Role.consumer, "Carol", "Lamp", "library"),
    ("dave", Role.consumer, "Dave", "Kettle", "library"),
    ("erin", Role.investor, "Erin", "Capital", "finance"),
)


async def create_verified_user(
    settings: Settings,
    *,
    username: str,
    email: str,
    password: str,
    role: str,
    first_name: str | None = None,
    last_name: str | None = None,
    department: str | None = None,
    region: str | None = None,
) -> uuid.UUID:
    """Create an active, verified account; raise ValueError when any input is refused."""
    if not re.match(USERNAME_PATTERN, username):
        raise ValueError("username must be 3-64 letters, digits, '.', '_' or '-'")
    try:
        email = str(TypeAdapter(EmailStr).validate_python(email)).lower()
        role_value = Role(role)
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"invalid email or role: {exc}") from exc
    try:
        check_password_policy(password, username=username, email=email)
    except ValidationFailed as exc:
        raise ValueError(f"password must have {', '.join(exc.details['password'])}") from exc
    db = Database(settings.database_url)
    clock = SystemClock()
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    try:
        async with db.sessionmaker() as session:
            clash = await session.scalar(
                select(User.id).where((User.username == username.lower()) | (User.email == email))
            )
            if clash is not None:
                raise ValueError("the username or email is already taken")
            if region is not None and await get_region(session, region) is None:
                known = ", ".join(await region_names(session)) or "none yet"
                raise ValueError(f"there is no region {region!r} (regions: {known})")
            now = clock.now()
            user = User(
                username=username.lower(),
                email=email,
                password_hash=hasher.hash(password),
                role=role_value,
                status=UserStatus.active,
                email_verified_at=now,
                first_name=first_name,
                last_name=last_name,
                department=department,
                region=region,
                profile_metadata={},
                department_metadata={},
                preferences={},
                created_at=now,
                updated_at=now,
            )
            session.add(user)
            await session.flush()
            record(
                session,
                at=now,
                action="user.created_by_cli",
                actor_id=None,
                actor_type="system",
                subject_type="user",
                subject_id=user.id,
                details={"role": role_value.value},
            )
            await session.commit()
            return user.id
    finally:
        await db.dispose()


async def seed_demo(settings: Settings) -> list[str]:
    """Create the demo community once; later runs leave existing accounts alone."""
    lines = [f"demo community in region {DEMO_REGION!r}, password {DEMO_PASSWORD!r} for all:"]
    db = Database(settings.database_url)
    try:
        await ensure_regions(db, [DEMO_REGION], SystemClock().now())
    finally:
        await db.dispose()
    for username, role, first, last, department in DEMO_PEOPLE:
        try:
            await create_verified_user(
                settings,
                username=username,
                email=f"{username}@demo.example.org",
                password=DEMO_PASSWORD,
                role=role.value,
                first_name=first,
                last_name=last,
                department=department,
                region=DEMO_REGION,
            )
            lines.append(f"  created {role.value:9} {username}")
        except ValueError:
            lines.append(f"  exists  {role.value:9} {username}")
    return lines
