"""Base classes for request and response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, WithJsonSchema

from gridex.core.clock import utc_iso
from gridex.core.units import micros_to_money, wh_to_kwh


class InputModel(BaseModel):
    """Request bodies refuse unknown fields, so nobody can mass-assign ``role`` or ``status``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must include a time zone (e.g. 2025-01-01T00:00:00Z)")
    return value.astimezone(UTC)


# Input timestamps: naive ones are refused.
AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]
# Output timestamps: ISO 8601 UTC with Z.
UtcDatetime = Annotated[datetime, PlainSerializer(utc_iso, return_type=str)]
# Output money: integer micros as the API's 6-decimal string.
Money = Annotated[
    int,
    PlainSerializer(micros_to_money, return_type=str),
    WithJsonSchema({"type": "string", "example": "0.125000"}),
]
# Output energy: integer Wh as kWh (exact: at most 3 decimals).
Kwh = Annotated[
    int,
    PlainSerializer(wh_to_kwh, return_type=float),
    WithJsonSchema({"type": "number", "example": 1.5}),
]
