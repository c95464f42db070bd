from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class Role(enum.StrEnum):
    admin = "admin"
    operator = "operator"
    prosumer = "prosumer"
    consumer = "consumer"
    investor = "investor"


SELF_SERVICE_ROLES = frozenset({Role.prosumer, Role.consumer, Role.investor})
STAFF_ROLES = frozenset({Role.admin, Role.operator})


class UserStatus(enum.StrEnum):
    invited = "invited"  # created by an admin, waiting for the person to set a password
    active = "active"
    suspended = "suspended"
    deleted = "deleted"  # soft-deleted and anonymised; kept for the ledger


class User(IdMixin, Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_role_status", "role", "status"),)

    # Stored lower-case so that sign-in and uniqueness are case-insensitive.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    status: Mapped[UserStatus] = mapped_column(
        Enum(UserStatus, native_enum=False, length=16), default=UserStatus.active
    )
    email_verified_at: Mapped[datetime | None]
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    department: Mapped[str | None] = mapped_column(String(100), index=True)
    region: Mapped[str | None] = mapped_column(String(64), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    profile_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    department_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    preferences: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    wallet_address: Mapped[str | None] = mapped_column(String(64), unique=True)
    failed_login_count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    suspended_reason: Mapped[str | None] = mapped_column(String(500))
    invited_by_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    deleted_at: Mapped[datetime | None]

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None
