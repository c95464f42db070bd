"""Request and response models of alerts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from gridex.alerts.models import Alert, AlertStatus, AlertType, Severity, SubjectKind
from gridex.core.schemas import InputModel, OutputModel, UtcDatetime


class SubjectOut(OutputModel):
    kind: SubjectKind
    id: str


class AlertOut(OutputModel):
    id: uuid.UUID
    type: AlertType
    severity: Severity
    status: AlertStatus
    subject: SubjectOut
    region: str | None
    user_id: uuid.UUID | None
    meter_id: uuid.UUID | None
    message: str
    details: dict[str, Any]
    occurrences: int
    raised_at: UtcDatetime
    last_seen_at: UtcDatetime
    acknowledged_at: UtcDatetime | None
    acknowledged_by: uuid.UUID | None
    resolved_at: UtcDatetime | None
    resolved_by: uuid.UUID | None
    auto_resolved: bool
    note: str | None

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, value: Any) -> Any:
        if isinstance(value, Alert):
            return {
                **{k: getattr(value, k) for k in cls.model_fields if hasattr(value, k)},
                "subject": {"kind": value.subject_kind, "id": value.subject_id},
                "auto_resolved": value.resolved_at is not None and value.resolved_by is None,
            }
        return value


class AlertResolveIn(InputModel):
    note: str | None = Field(default=None, max_length=1000)


class BulkAcknowledgeIn(InputModel):
    ids: list[uuid.UUID] = Field(min_length=1, max_length=500)


class BulkAcknowledgeOut(OutputModel):
    acknowledged: list[uuid.UUID]
    # Already acknowledged or resolved: left as they were.
    skipped: list[uuid.UUID]


class SummaryOut(OutputModel):
    """The unresolved alerts the caller sees."""

    open: int
    acknowledged: int
    unresolved: int
    by_severity: dict[str, int]
    by_type: dict[str, int]
    oldest_unresolved_at: UtcDatetime | None


class AlertStatsOut(OutputModel):
    """Alerts raised in [from, to) that the caller sees, by status, type and severity."""

    from_: UtcDatetime = Field(serialization_alias="from")
    to: UtcDatetime
    raised: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    by_severity: dict[str, int]
    auto_resolved: int


class TypeAnalyticsOut(OutputModel):
    type: str
    count: int
    open: int
    acknowledged: int
    resolved: int
    mean_time_to_acknowledge_seconds: float | None
    mean_time_to_resolve_seconds: float | None


class AlertAnalyticsOut(OutputModel):
    """Alerts raised in [from, to) in the staff member's scope (optionally one region)."""

    from_: UtcDatetime = Field(serialization_alias="from")
    to: UtcDatetime
    region: str | None
    total: int
    mean_time_to_acknowledge_seconds: float | None
    mean_time_to_resolve_seconds: float | None
    by_type: list[TypeAnalyticsOut]
    by_region: dict[str, int]


class Period(OutputModel):
    start: datetime
    end: datetime
