"""Tariff queries. A price lookup is two indexed queries (the schedule in force, the active
overrides), an interval's segments the same two, however long the interval."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.tariffs.models import TariffOverride, TariffSchedule


def tariff_in_force(region: Any, at: Any) -> ColumnElement[bool]:
    """SQL: whether ``region`` has a schedule or an override in force at ``at`` (SQL
    expressions), for a statement that needs to know without a query of its own."""
    schedule = exists().where(TariffSchedule.region == region, TariffSchedule.effective_from <= at)
    override = exists().where(
        TariffOverride.region == region, TariffOverride.starts_at <= at, TariffOverride.ends_at > at
    )
    return schedule | override


async def schedules_between(
    session: AsyncSession, region: str, start: datetime, end: datetime
) -> list[TariffSchedule]:
    """The schedule in force at ``start`` (if any) and those taking effect in ``(start, end)``,
    oldest first."""
    first = await session.scalar(
        select(TariffSchedule)
        .where(TariffSchedule.region == region, TariffSchedule.effective_from <= start)
        .order_by(TariffSchedule.effective_from.desc())
        .limit(1)
    )
    later = await session.scalars(
        select(TariffSchedule)
        .where(
            TariffSchedule.region == region,
            TariffSchedule.effective_from > start,
            TariffSchedule.effective_from < end,
        )
        .order_by(TariffSchedule.effective_from)
    )
    return ([first] if first is not None else []) + list(later)


async def schedule_at(session: AsyncSession, region: str, at: datetime) -> TariffSchedule | None:
    return await session.scalar(
        select(TariffSchedule)
        .where(TariffSchedule.region == region, TariffSchedule.effective_from <= at)
        .order_by(TariffSchedule.effective_from.desc())
        .limit(1)
    )


async def next_schedule(session: AsyncSession, region: str, at: datetime) -> TariffSchedule | None:
    """The first schedule taking effect after ``at``."""
    return await session.scalar(
        select(TariffSchedule)
        .where(TariffSchedule.region == region, TariffSchedule.effective_from > at)
        .order_by(TariffSchedule.effective_from)
        .limit(1)
    )


async def overrides_between(
    session: AsyncSession, region: str, start: datetime, end: datetime
) -> list[TariffOverride]:
    """Overrides in force at some time of ``[start, end)``."""
    return list(
        await session.scalars(
            select(TariffOverride)
            .where(
                TariffOverride.region == region,
                TariffOverride.starts_at < end,
                TariffOverride.ends_at > start,
                TariffOverride.ends_at > TariffOverride.starts_at,  # not cancelled unstarted
            )
            .order_by(TariffOverride.created_at, TariffOverride.id)
        )
    )


async def overrides_at(session: AsyncSession, region: str, at: datetime) -> list[TariffOverride]:
    return list(
        await session.scalars(
            select(TariffOverride).where(
                TariffOverride.region == region,
                TariffOverride.starts_at <= at,
                TariffOverride.ends_at > at,
            )
        )
    )


def schedules_query(region: str) -> Select[TariffSchedule]:
    return (
        select(TariffSchedule)
        .where(TariffSchedule.region == region)
        .order_by(TariffSchedule.effective_from.desc())
    )


def overrides_query(region: str, *, active_at: datetime | None = None) -> Select[TariffOverride]:
    query = select(TariffOverride).where(TariffOverride.region == region)
    if active_at is not None:
        query = query.where(TariffOverride.ends_at > active_at)
    return query.order_by(TariffOverride.starts_at.desc(), TariffOverride.id)


async def schedule_taking_effect(
    session: AsyncSession, region: str, at: datetime
) -> TariffSchedule | None:
    return await session.scalar(
        select(TariffSchedule).where(
            TariffSchedule.region == region, TariffSchedule.effective_from == at
        )
    )


async def get_override(session: AsyncSession, override_id: uuid.UUID) -> TariffOverride | None:
    return await session.get(TariffOverride, override_id)


async def pending_override_counts(session: AsyncSession, at: datetime) -> dict[str, int]:
    """Per region, how many overrides are in force at ``at`` or start later."""
    rows = await session.execute(
        select(TariffOverride.region, func.count())
        .where(TariffOverride.ends_at > at, TariffOverride.ends_at > TariffOverride.starts_at)
        .group_by(TariffOverride.region)
    )
    return {region: int(count) for region, count in rows}
