"""Request and response models of the meters API. Energy is kWh (<= 3 decimals) at this edge."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from gridex.core.schemas import AwareDatetime, InputModel, OutputModel, UtcDatetime
from gridex.core.security import decode_wallet_address
from gridex.core.units import UnitError, kwh_to_wh
from gridex.meters.models import CommandStatus, MeterKind, MeterStatus

# Safe in an MQTT topic level: no '/', '+', '#'.
SERIAL_PATTERN = r"^[A-Za-z0-9_.:-]{3,64}$"
Interval = Literal["raw", "15m", "1h", "1d", "1mo"]


def _capacity(value: float) -> float:
    try:
        watts = kwh_to_wh(value)  # kW -> W is the same x1000 as kWh -> Wh
    except UnitError as exc:
        raise ValueError(str(exc).replace("kWh", "kW").replace("Wh", "W")) from exc
    if watts <= 0:
        raise ValueError("capacity_kw must be positive")
    return value


def _public_key(value: str) -> str:
    try:
        decode_wallet_address(value)
    except ValueError as exc:
        raise ValueError("device_public_key must be a base58 Ed25519 public key") from exc
    return value


CapacityKw = Annotated[float, AfterValidator(_capacity)]
PublicKey = Annotated[str, AfterValidator(_public_key)]


class Location(InputModel):
    building: str | None = Field(default=None, max_length=100)
    room: str | None = Field(default=None, max_length=100)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class MeterIn(InputModel):
    serial: str = Field(pattern=SERIAL_PATTERN)
    kind: MeterKind = MeterKind.bidirectional
    region: str | None = Field(default=None, min_length=1, max_length=64)
    location: Location = Field(default_factory=Location)
    capacity_kw: CapacityKw = Field(description="Rated power in kW (<= 3 decimals)")
    installation_date: date | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    device_public_key: PublicKey | None = Field(
        default=None, description="Ed25519 public key (base58); readings must then be signed"
    )
    interval_minutes: Literal[1, 3, 5, 15] = 15
    owner_id: uuid.UUID | None = Field(
        default=None, description="Operators and admins register for anyone; default: yourself"
    )


class MeterUpdate(InputModel):
    """Owners may change location, metadata and installation date; the rest is staff-only."""

    location: Location | None = None
    metadata: dict[str, Any] | None = None
    installation_date: date | None = None
    region: str | None = Field(default=None, min_length=1, max_length=64)
    kind: MeterKind | None = None
    capacity_kw: CapacityKw | None = None
    device_public_key: PublicKey | None = None
    interval_minutes: Literal[1, 3, 5, 15] | None = None


STAFF_ONLY_FIELDS = frozenset(
    {"region", "kind", "capacity_kw", "device_public_key", "interval_minutes"}
)


class StatusIn(InputModel):
    status: MeterStatus


class AssignIn(InputModel):
    user_id: uuid.UUID


class ReadingValuesIn(InputModel):
    """What a reading measures, as sent by a device or by staff correcting it."""

    energy_consumed_kwh: float = Field(ge=0, description="Imported from the grid, kWh")
    energy_produced_kwh: float = Field(ge=0, description="Exported to the grid, kWh")
    interval_minutes: Literal[1, 3, 5, 15] | None = None
    peak_demand_kw: float | None = Field(default=None, ge=0)
    power_factor: float | None = Field(default=None, ge=-1, le=1)
    voltage: float | None = Field(default=None, ge=0)
    current: float | None = Field(default=None, ge=0)
    frequency: float | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None


class ReadingIn(ReadingValuesIn):
    """One interval ending at ``timestamp`` (documentation of the ingest body)."""

    timestamp: AwareDatetime
    signature: str | None = Field(
        default=None, description="base58 Ed25519 signature of the canonical JSON"
    )


class BatchReadingIn(ReadingIn):
    meter_serial: str


class ReadingListIn(InputModel):
    readings: list[ReadingIn]


class BatchIn(InputModel):
    readings: list[BatchReadingIn]


class RejectedItemOut(OutputModel):
    index: int
    code: str
    reason: str
    message: str


class IngestOut(OutputModel):
    accepted: int
    duplicates: int
    rejected: list[RejectedItemOut]


class ReadingOut(OutputModel):
    meter_id: uuid.UUID
    timestamp: UtcDatetime
    interval_minutes: int
    energy_consumed_kwh: float
    energy_produced_kwh: float
    peak_demand_kw: float | None
    power_factor: float | None
    voltage: float | None
    current: float | None
    frequency: float | None
    metadata: dict[str, Any] | None
    source: str
    received_at: UtcDatetime
    revision: int


class CorrectionIn(ReadingValuesIn):
    timestamp: AwareDatetime | None = Field(
        default=None, description="If given, must equal the path's timestamp"
    )
    reason: str = Field(min_length=3, max_length=500)


class CorrectionOut(OutputModel):
    id: uuid.UUID
    reading: ReadingOut
    previous: dict[str, Any]
    reason: str
    corrected_by: uuid.UUID | None
    actor_type: str
    corrected_at: UtcDatetime


class MeterTotals(OutputModel):
    consumed_kwh: float
    produced_kwh: float
    net_kwh: float
    readings: int


class MeterOut(OutputModel):
    id: uuid.UUID
    serial: str
    kind: MeterKind
    status: MeterStatus
    region: str
    owner_id: uuid.UUID | None
    capacity_kw: float
    location: dict[str, Any]
    installation_date: date | None
    metadata: dict[str, Any]
    device_public_key: str | None
    interval_minutes: int
    online: bool
    last_reading_at: UtcDatetime | None
    last_seen_at: UtcDatetime | None
    last_reading: ReadingOut | None
    totals: MeterTotals
    created_at: UtcDatetime
    updated_at: UtcDatetime


class PointOut(OutputModel):
    start: UtcDatetime
    consumed_kwh: float
    produced_kwh: float
    net_kwh: float
    peak_kw: float


class PointsOut(OutputModel):
    meter_id: uuid.UUID
    interval: Interval
    points: list[PointOut]
    next_after: UtcDatetime | None = Field(
        description="Pass as `after` for the next page; null on the last page"
    )


class Period(OutputModel):
    start: UtcDatetime
    end: UtcDatetime


class StatsOut(OutputModel):
    meter_id: uuid.UUID
    period: Period
    readings: int
    total_consumed_kwh: float
    total_produced_kwh: float
    net_consumption_kwh: float
    average_consumed_kwh_per_reading: float | None
    average_produced_kwh_per_reading: float | None
    max_power_kw: float | None
    min_power_kw: float | None
    average_voltage: float | None
    average_current: float | None


class ConsumptionAnalytics(OutputModel):
    total_consumed_kwh: float
    total_produced_kwh: float
    net_consumption_kwh: float
    average_daily_consumption: float
    peak_consumption_kw: float
    efficiency_rating: str | None


class UsagePatterns(OutputModel):
    peak_hours: list[int]
    off_peak_hours: list[int]
    weekend_vs_weekday_ratio: float | None


class EnvironmentalImpact(OutputModel):
    carbon_offset_kg: float
    renewable_energy_percent: float
    grid_independence_score: float


class AnalyticsOut(OutputModel):
    meter_id: uuid.UUID
    period: Period
    consumption_analytics: ConsumptionAnalytics
    usage_patterns: UsagePatterns
    environmental_impact: EnvironmentalImpact


class PeriodTotals(OutputModel):
    start: UtcDatetime
    end: UtcDatetime
    consumed_kwh: float
    produced_kwh: float
    net_kwh: float
    readings: int


class CompareOut(OutputModel):
    meter_id: uuid.UUID
    period: Literal["day", "week", "month"]
    current: PeriodTotals
    previous: PeriodTotals
    change_percent: dict[str, float | None]


class CommandIn(InputModel):
    command: Literal["reset_counters", "reboot", "set_interval", "relay_on", "relay_off"]
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: int | None = Field(default=None, ge=1, le=3600)


class CommandOut(OutputModel):
    command_id: uuid.UUID = Field(validation_alias="id")
    meter_id: uuid.UUID
    command: str
    params: dict[str, Any]
    status: CommandStatus
    deadline: UtcDatetime
    created_at: UtcDatetime
    sent_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    result: dict[str, Any] | None
    error: str | None


class RejectedOut(OutputModel):
    id: uuid.UUID
    received_at: UtcDatetime
    source: str
    meter_id: uuid.UUID | None
    meter_serial: str | None
    code: str
    reason: str
    message: str
    payload: Any


class RegionStatsOut(OutputModel):
    region: str
    period: Period
    meters: int
    meters_active: int
    meters_online: int
    total_consumed_kwh: float
    total_produced_kwh: float
    net_consumption_kwh: float
    peak_load_kw: float
    peak_at: UtcDatetime | None


class TopConsumerOut(OutputModel):
    meter_id: uuid.UUID
    serial: str
    owner_id: uuid.UUID | None
    consumed_kwh: float
    produced_kwh: float


class TopConsumersOut(OutputModel):
    region: str
    period: Period
    items: list[TopConsumerOut]


class RealtimeOut(OutputModel):
    region: str
    interval_start: UtcDatetime | None
    interval_end: UtcDatetime | None
    consumption_kw: float
    production_kw: float
    net_load_kw: float
    meters_reporting: int
    meters_online: int
    as_of: UtcDatetime


class StatusEventOut(OutputModel):
    id: uuid.UUID
    meter_id: uuid.UUID
    at: UtcDatetime
    status: str
    reason: str
    details: dict[str, Any]
