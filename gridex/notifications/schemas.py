"""Request and response models of notifications and their preferences."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, field_validator

from gridex.core.schemas import InputModel, OutputModel, UtcDatetime
from gridex.users.schemas import NOTIFICATION_CHANNELS, Preferences


class NotificationOut(OutputModel):
    id: uuid.UUID
    type: str
    title: str
    body: str
    data: dict[str, Any]
    read_at: UtcDatetime | None
    created_at: UtcDatetime


class UnreadCountOut(OutputModel):
    count: int


class ReadAllOut(OutputModel):
    marked: int


class NotificationPreferencesOut(OutputModel):
    """The channels each event type reaches the user on: their choice, else the default."""

    channels: dict[str, list[str]]
    defaults: dict[str, list[str]]


class NotificationPreferencesIn(InputModel):
    """Channels per event type; event types left out keep their current setting."""

    channels: dict[str, list[str]]

    @field_validator("channels")
    @classmethod
    def _known(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # One rule for both paths (here and PUT /me/preferences): the profile's validator.
        return Preferences(notifications=value).notifications


class TestNotificationIn(InputModel):
    # Default: every channel.
    channels: list[str] | None = Field(default=None, min_length=1)

    @field_validator("channels")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = set(value) - NOTIFICATION_CHANNELS
        if unknown:
            raise ValueError(
                f"unknown channels {sorted(unknown)}; known: {sorted(NOTIFICATION_CHANNELS)}"
            )
        return sorted(set(value))


class TestNotificationOut(OutputModel):
    notification: NotificationOut | None
    channels: list[str]
    email_queued: bool
