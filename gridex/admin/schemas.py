from __future__ import annotations

import uuid
from typing import Any

from gridex.core.schemas import OutputModel, UtcDatetime


class OutboxEmailOut(OutputModel):
    id: uuid.UUID
    to_address: str
    subject: str
    # Withheld in production (codes and reset links), and empty once delivered by SMTP.
    body: str | None
    kind: str
    status: str
    attempts: int
    last_error: str | None
    created_at: UtcDatetime
    sent_at: UtcDatetime | None


class SystemInfoOut(OutputModel):
    name: str = "gridex"
    version: str
    environment: str
    uptime_seconds: float
    backends: dict[str, str]
    config: dict[str, Any]
    jobs: list[str]


class HealthOut(OutputModel):
    status: str
    version: str
    timestamp: UtcDatetime
    checks: dict[str, str]


class DepartmentOut(OutputModel):
    name: str
    members: int
    members_by_role: dict[str, int]
    regions: list[str]
    meters: int
    produced_kwh: float
    consumed_kwh: float


class RuntimeSettingOut(OutputModel):
    value: Any
    default: Any
    source: str  # runtime | environment
    description: str
    updated_at: UtcDatetime | None
    updated_by_id: uuid.UUID | None


class RuntimeConfigOut(OutputModel):
    version: int
    updated_at: UtcDatetime | None
    settings: dict[str, RuntimeSettingOut]


class AdminStatsOut(OutputModel):
    as_of: UtcDatetime
    users: dict[str, Any]
    meters: dict[str, Any]
    market: dict[str, Any]
    ledger: dict[str, Any]
    health: dict[str, Any]
    jobs: list[str]


class DemoDataOut(OutputModel):
    created: bool
    lines: list[str]
