"""Epochs in time: delivery intervals of ``GRIDEX_EPOCH_MINUTES`` aligned to UTC and named by
their start, their gate closure and the trading horizon. Pure functions of the settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from gridex.core.config import Settings
from gridex.core.errors import ValidationFailed
from gridex.market.models import EpochState, Mechanism

# Epoch boundaries are counted from the Unix time origin, so they fall on whole UTC minutes.
_UNIX_TIME_ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_length(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.epoch_minutes)


def floor_epoch(at: datetime, settings: Settings) -> datetime:
    """Start of the epoch containing ``at`` (epochs are aligned to UTC, named by start)."""
    length = epoch_length(settings)
    return at - (at - _UNIX_TIME_ORIGIN) % length


def next_open_start(now: datetime, settings: Settings) -> datetime:
    """The earliest epoch whose gate closure is still ahead of ``now``."""
    return floor_epoch(now + timedelta(seconds=settings.gate_closure_seconds), settings) + (
        epoch_length(settings)
    )


def gate_closure_of(start: datetime, settings: Settings) -> datetime:
    return start - timedelta(seconds=settings.gate_closure_seconds)


def horizon_end(now: datetime, settings: Settings) -> datetime:
    """The latest epoch start orders may name."""
    return now + timedelta(hours=settings.market_horizon_hours)


def epoch_row(
    region: str, start: datetime, settings: Settings, mechanism: Mechanism, now: datetime
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "region": region,
        "start": start,
        "end": start + epoch_length(settings),
        "gate_closure": gate_closure_of(start, settings),
        "state": EpochState.open,
        "mechanism": mechanism,
        "seq_counter": 0,
        "created_at": now,
    }


def check_aligned(start: datetime, settings: Settings) -> datetime:
    start = start.astimezone(UTC)
    if floor_epoch(start, settings) != start:
        raise ValidationFailed(
            f"An epoch starts on a {settings.epoch_minutes}-minute boundary (UTC)",
            details={"field": "epoch"},
        )
    return start
