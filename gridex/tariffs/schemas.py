"""Request and response models of the tariffs API.

Prices are decimal strings per kWh at this edge (inputs: a string or a number, <= 6 decimals)
and integer micros inside; energy is kWh (<= 3 decimals) here and Wh inside. Times of day
(``"17:00"``) are local to the region's time zone; timestamps are UTC.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gridex.core.config import REGION_NAME
from gridex.core.schemas import (
    AwareDatetime,
    InputModel,
    Kwh,
    Money,
    OutputModel,
    UtcDatetime,
)
from gridex.core.units import UnitError, money_to_micros
from gridex.tariffs.rules import Band, parse_clock, parse_days

# A tariff price per kWh: at most 1,000 currency units, far above any real grid price and far
# inside what the ledger's products (Wh x micros) can hold.
MAX_TARIFF_PRICE_MICROS = 1_000 * 1_000_000
MAX_BANDS = 48
MAX_HOLIDAYS = 1_000


def _price(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("a price must be a decimal string or a number")
    try:
        micros = money_to_micros(value)
    except UnitError as exc:
        raise ValueError(str(exc)) from exc
    if micros < 0:
        raise ValueError("a price must not be negative")
    if micros > MAX_TARIFF_PRICE_MICROS:
        raise ValueError(f"a price must be at most {MAX_TARIFF_PRICE_MICROS // 1_000_000} per kWh")
    return micros


# Input: a price per kWh (string or number, <= 6 decimals, 0 .. 1000) validated into micros.
TariffPriceIn = Annotated[
    int,
    BeforeValidator(_price),
    WithJsonSchema({"type": "string", "example": "0.300000", "description": "per kWh"}),
]

_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _date_or_instant(value: object) -> date | datetime:
    """``"yyyy-mm-dd"`` stays a date (local midnight of the region); anything else must be a
    timestamp with a time zone."""
    if isinstance(value, str) and _DATE_ONLY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a date") from exc
    try:
        return _INSTANT.validate_python(value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None


_INSTANT: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)

EffectiveFrom = Annotated[
    datetime | date,
    PlainValidator(_date_or_instant),
    WithJsonSchema(
        {
            "type": "string",
            "example": "2026-04-01",
            "description": "a date (local midnight in the region) or a timestamp with zone",
        }
    ),
]

DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class BandIn(InputModel):
    """A time-of-use band: local clock times, its import price and the days it applies to
    (default every day; holidays count as weekend, i.e. as Sundays)."""

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="default: peak / off_peak / standard by price against the base import price",
    )
    start: str = Field(examples=["17:00"], description="HH:MM local")
    end: str = Field(examples=["21:00"], description="HH:MM local, 24:00 = midnight")
    import_price: TariffPriceIn
    days: Literal["all", "weekday", "weekend"] | list[DayName] | None = None

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        parse_clock(value)
        return value

    @field_validator("end")
    @classmethod
    def _end(cls, value: str) -> str:
        parse_clock(value, end=True)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> BandIn:
        if parse_clock(self.start) == parse_clock(self.end, end=True):
            raise ValueError("a band's end must differ from its start")
        if isinstance(self.days, list) and not self.days:
            raise ValueError("days must name at least one day")
        return self

    def band(self, base_import_micros: int) -> Band:
        name = self.name
        if name is None:
            if self.import_price > base_import_micros:
                name = "peak"
            elif self.import_price < base_import_micros:
                name = "off_peak"
            else:
                name = "standard"
        return Band(
            name,
            parse_clock(self.start),
            parse_clock(self.end, end=True),
            self.import_price,
            parse_days(self.days),
        )


class TariffIn(InputModel):
    region: str = Field(pattern=f"^{REGION_NAME}$")
    import_price: TariffPriceIn = Field(description="grid import price outside every band")
    export_price: TariffPriceIn = Field(description="feed-in price for exported energy")
    time_of_use: list[BandIn] = Field(default_factory=list, max_length=MAX_BANDS)
    holidays: list[date] = Field(default_factory=list, max_length=MAX_HOLIDAYS)
    effective_from: EffectiveFrom | None = Field(default=None, description="default: now")


class OverrideIn(InputModel):
    region: str = Field(pattern=f"^{REGION_NAME}$")
    import_price: TariffPriceIn | None = None
    export_price: TariffPriceIn | None = None
    reason: str = Field(min_length=3, max_length=500)
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    expires_at: AwareDatetime


class BandOut(OutputModel):
    name: str
    start: str = Field(examples=["17:00"], description="HH:MM local")
    end: str = Field(examples=["21:00"], description="HH:MM local, 24:00 = midnight")
    import_price: Money
    days: list[DayName]


class CurrentBandOut(OutputModel):
    name: str
    start: str = Field(examples=["17:00"], description="HH:MM local")
    end: str = Field(examples=["21:00"], description="HH:MM local, 24:00 = midnight")


class CurrentOut(OutputModel):
    """The prices in force at ``at``. ``band`` is null outside every time-of-use band (the
    schedule's base price, or no schedule); ``source``: override, schedule or default (the
    region has no tariff: its market band's prices)."""

    region: str
    timezone: str
    at: UtcDatetime
    import_price: Money
    export_price: Money
    band: CurrentBandOut | None
    band_name: str
    source: Literal["override", "schedule", "default"]
    schedule_id: uuid.UUID | None
    override_id: uuid.UUID | None = None


class ScheduleOut(OutputModel):
    id: uuid.UUID
    region: str
    timezone: str
    effective_from: UtcDatetime
    superseded_at: UtcDatetime | None = Field(description="when the next schedule took over")
    import_price: Money
    export_price: Money
    time_of_use: list[BandOut]
    holidays: list[date]
    created_at: UtcDatetime
    created_by: uuid.UUID | None


class OverrideOut(OutputModel):
    id: uuid.UUID
    region: str
    import_price: Money | None
    export_price: Money | None
    reason: str
    starts_at: UtcDatetime
    expires_at: UtcDatetime
    ends_at: UtcDatetime
    cancelled_at: UtcDatetime | None
    active: bool
    created_at: UtcDatetime
    created_by: uuid.UUID | None


class HistoryItemOut(OutputModel):
    """A schedule or an override, whichever ``kind`` says (the other kind's fields are null)."""

    kind: Literal["schedule", "override"]
    schedule: ScheduleOut | None = None
    override: OverrideOut | None = None
    starts_at: UtcDatetime


class TariffEstimateLineOut(OutputModel):
    kind: Literal["import", "export"]
    band: str
    kwh: Kwh
    unit_price: Money
    amount: Money = Field(description="export lines are credits (negative)")


class TariffEstimateOut(OutputModel):
    region: str | None
    from_: UtcDatetime | None = Field(serialization_alias="from")
    to: UtcDatetime | None
    lines: list[TariffEstimateLineOut]
    total: Money


class ForecastPointOut(OutputModel):
    epoch: UtcDatetime
    band: str
    import_price: Money
    export_price: Money
    source: Literal["override", "schedule", "default"]
    expected_clearing_price: Money | None = Field(
        description="volume-weighted clearing price of the same local time of day over the "
        "last days; null without cleared epochs then"
    )


class ForecastOut(OutputModel):
    region: str
    timezone: str
    profile_days: int
    points: list[ForecastPointOut]


class RegionTariffOut(OutputModel):
    region: str
    timezone: str
    import_price: Money
    export_price: Money
    band: str
    source: Literal["override", "schedule", "default"]
    schedule_id: uuid.UUID | None
    schedule_effective_from: UtcDatetime | None
    next_schedule_at: UtcDatetime | None
    override_id: uuid.UUID | None
    pending_overrides: int = Field(description="overrides in force now or starting later")


class BandHoursOut(OutputModel):
    band: str
    hours: float
    average_import_price: Money


class MarketVsTariffOut(OutputModel):
    epochs_cleared: int
    volume_kwh: Kwh
    average_clearing_price: Money | None
    average_import_price: Money | None = Field(
        description="grid import price over the cleared epochs, volume-weighted"
    )
    average_feed_in_price: Money | None
    saved_vs_grid: Money = Field(description="what buyers paid less than the grid import price")
    earned_vs_feed_in: Money = Field(description="what sellers got above the feed-in price")


class TariffAnalyticsOut(OutputModel):
    region: str
    timezone: str
    from_: UtcDatetime = Field(serialization_alias="from")
    to: UtcDatetime
    time_weighted_import_price: Money
    time_weighted_export_price: Money
    override_hours: float
    schedules: int = Field(description="schedules in force at some time of the period")
    bands: list[BandHoursOut]
    market: MarketVsTariffOut


def band_out(row: dict[str, object]) -> BandOut:
    return BandOut.model_validate(
        {
            "name": row["name"],
            "start": row["start"],
            "end": row["end"],
            "import_price": row["import_price_micros"],
            "days": row["days"],
        }
    )
