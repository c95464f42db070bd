from __future__ import annotations

import uuid
from typing import Any
from zoneinfo import available_timezones

from pydantic import EmailStr, Field, field_validator

from gridex.auth.models import Role
from gridex.auth.schemas import USERNAME_PATTERN
from gridex.core.schemas import InputModel, Metadata, OutputModel, UtcDatetime

NOTIFICATION_CHANNELS = frozenset({"in_app", "email", "websocket"})
# Event types a person can choose channels for. `alert_raised` covers every alert type that
# has no choice of its own.
NOTIFICATION_EVENTS = frozenset(
    {
        "trade_executed",
        "order_updated",
        "epoch_cleared",
        "settlement_completed",
        "withdrawal_decided",
        "invoice_issued",
        "security",
        "alert_raised",
        "device_offline",
        "consumption_spike",
        "generation_drop",
        "voltage_out_of_range",
        "reading_rejected",
        "low_balance",
        "settlement_shortfall",
        "chain_mismatch",
        "invoice_overdue",
        "seller_offline_before_gate",
    }
)


class ProfileUpdate(InputModel):
    """What a user may change about themselves: never role, status or email."""

    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    department: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{4,31}$")
    metadata: Metadata | None = None
    department_metadata: Metadata | None = None


class AdminUserUpdate(ProfileUpdate):
    email: EmailStr | None = None


class Preferences(InputModel):
    """Notification channels per event type, locale and time zone."""

    notifications: dict[str, list[str]] = Field(default_factory=dict)
    locale: str = Field(default="en", pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
    timezone: str = "UTC"

    @field_validator("notifications")
    @classmethod
    def _known_channels(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for event, channels in value.items():
            if event not in NOTIFICATION_EVENTS:
                raise ValueError(
                    f"unknown event type {event!r}; known: {sorted(NOTIFICATION_EVENTS)}"
                )
            unknown = set(channels) - NOTIFICATION_CHANNELS
            if unknown:
                raise ValueError(
                    f"unknown channels {sorted(unknown)}; known: {sorted(NOTIFICATION_CHANNELS)}"
                )
        return {event: sorted(set(channels)) for event, channels in value.items()}

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r}")
        return value


class InviteIn(InputModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    email: EmailStr
    role: Role
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    department: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=64)


class RoleIn(InputModel):
    role: Role


class SuspendIn(InputModel):
    reason: str = Field(min_length=3, max_length=500)


class AuditEntryOut(OutputModel):
    id: uuid.UUID
    at: UtcDatetime
    actor_id: uuid.UUID | None
    actor_type: str
    action: str
    subject_type: str | None
    subject_id: str | None
    outcome: str
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
