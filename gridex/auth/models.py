from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, func
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


class OtpPurpose(enum.StrEnum):
    verify_email = "verify_email"
    reset_password = "reset_password"
    set_password = "set_password"


class OtpCode(IdMixin, Base):
    """A one-time code sent by email. Only its keyed hash is stored."""

    __tablename__ = "otp_codes"
    __table_args__ = (Index("ix_otp_codes_user_purpose", "user_id", "purpose"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[OtpPurpose] = mapped_column(Enum(OtpPurpose, native_enum=False, length=20))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class AuthSession(IdMixin, Base):
    """One sign-in: the family of refresh tokens that descend from it and their access tokens."""

    __tablename__ = "auth_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    method: Mapped[str] = mapped_column(String(16))  # password | wallet
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(IdMixin, Base):
    """An opaque rotating refresh token; presenting a used one revokes its whole session."""

    __tablename__ = "refresh_tokens"

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class WalletNonce(Base):
    """A one-use Sign-In-With-Solana challenge."""

    __tablename__ = "wallet_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    wallet_address: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(2000))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    consumed_at: Mapped[datetime | None]


class ApiKey(IdMixin, Base):
    """A credential for devices and integrations; the secret is shown once and stored hashed."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    meter_id: Mapped[uuid.UUID | None]
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
