"""Base classes for request and response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from gridex.core.clock import utc_iso
from gridex.core.errors import GridexError, ValidationFailed
from gridex.core.units import micros_to_money, wh_to_kwh


class InputModel(BaseModel):
    """Request bodies refuse unknown fields, so nobody can mass-assign ``role`` or ``status``,
    and text with NUL characters, which PostgreSQL cannot store."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > METADATA_MAX_DEPTH:  # deeper input is refused by its own field's validator
        return False
    if isinstance(value, dict):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v, depth + 1) for v in value)
    return False


# Free-form JSON a client may attach (user, meter and reading metadata): bounded so that one
# request cannot store megabytes or nest deeper than the JSON encoders recurse.
METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 16


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` nests dicts or lists more than ``levels`` deep (looks no deeper)."""
    children = value.values() if isinstance(value, dict) else value
    if not isinstance(value, dict | list):
        return False
    if levels == 0:
        return True
    return any(_deeper_than(child, levels - 1) for child in children)


def metadata_problem(value: Any) -> str | None:
    """What is wrong with free-form ``metadata`` (too deep, too large), or None."""
    if _deeper_than(value, METADATA_MAX_DEPTH):
        return f"metadata nests deeper than {METADATA_MAX_DEPTH} levels"
    if len(orjson.dumps(value)) > METADATA_MAX_BYTES:
        return f"metadata is larger than {METADATA_MAX_BYTES} bytes of JSON"
    return None


def storable_json(value: Any, max_depth: int = 2 * METADATA_MAX_DEPTH) -> Any:
    """``value`` if a JSON column can store it, else a note of why it was left out (a rejected
    payload nested so deep that encoding it would exhaust the recursion limit)."""
    if _deeper_than(value, max_depth):
        return {"omitted": f"nested deeper than {max_depth} levels"}
    return value


def _bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    problem = metadata_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_metadata)]


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Timestamps the API accepts. Far wider than any meter, market or bill needs, and narrow enough
# that adding an interval, a horizon or a time zone offset can never leave datetime's range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must include a time zone (e.g. 2025-01-01T00:00:00Z)")
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range (1970 to 2999)") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError("timestamp out of range (1970 to 2999)")
    return value


# Input timestamps: naive ones are refused.
AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]
# Output timestamps: ISO 8601 UTC with Z.
UtcDatetime = Annotated[
    datetime,
    PlainSerializer(utc_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "example": "2026-01-01T12:00:00Z"}),
]
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


class ErrorDetail(BaseModel):
    code: str = Field(examples=["VALIDATION_ERROR"])
    message: str = Field(examples=["The request is not valid"])
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorOut(BaseModel):
    """Every error the API answers has this shape."""

    error: ErrorDetail
    request_id: str | None = Field(examples=["3f5ec384df484222b24967b5cc870254"])


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``statuses`` in the API's error shape."""
    return {
        status: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


ERROR_DESCRIPTIONS = {
    400: "The request was refused (see `error.code`)",
    401: "`AUTHENTICATION_REQUIRED`, `INVALID_TOKEN` or `INVALID_CREDENTIALS`",
    403: "`FORBIDDEN`: the caller's role or API key scopes do not allow this",
    404: "`NOT_FOUND`: no such object, or it belongs to someone else",
    409: "`CONFLICT` or a domain state conflict (see `error.code`)",
    413: "`PAYLOAD_TOO_LARGE`",
    422: "`VALIDATION_ERROR` (with `details.fields`) or a domain rule (see `error.code`)",
    429: "`RATE_LIMIT_EXCEEDED`, with `Retry-After`",
    500: "`INTERNAL_ERROR`",
    503: "`SERVICE_UNAVAILABLE`: a dependency is down; retry after `Retry-After` seconds",
}


def raises(*errors: type[GridexError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` naming the codes a route answers besides the ones every route may
    (``API_ERRORS``): per status, each code with its meaning and an example body. A 422 always
    keeps ``VALIDATION_ERROR``, which any malformed request gets."""
    by_status: dict[int, list[type[GridexError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, [])
        if error.code not in {e.code for e in by_status[error.status]}:
            by_status[error.status].append(error)
    if 422 in by_status and ValidationFailed not in by_status[422]:
        by_status[422].insert(0, ValidationFailed)
    return {status: _coded_response(found) for status, found in sorted(by_status.items())}


def _coded_response(errors: list[type[GridexError]]) -> dict[str, Any]:
    lines = "\n".join(f"- `{e.code}`: {e.default_message}" for e in errors)
    examples = {
        e.code: {
            "summary": e.default_message,
            "value": {
                "error": {"code": e.code, "message": e.default_message, "details": {}},
                "request_id": "3f5ec384df484222b24967b5cc870254",
            },
        }
        for e in errors
    }
    return {
        "model": ErrorOut,
        "description": f"Refused with one of these codes:\n\n{lines}",
        "content": {"application/json": {"examples": examples}},
    }
