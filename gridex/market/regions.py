"""A region's market settings in force: its own row, or the defaults: the band from the
region's tariff (feed-in .. grid import price at the time in question) once it has one, else the
deployment's."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.runtime import Runtime
from gridex.core.units import money_to_micros
from gridex.market import repository
from gridex.market.models import Mechanism, RegionSettings
from gridex.tariffs import service as tariffs


@dataclass(frozen=True, slots=True)
class MarketParams:
    region: str
    mechanism: Mechanism
    min_price_micros: int
    max_price_micros: int
    fee_bps: int
    source: Literal["region", "tariff", "default"]
    updated_at: datetime | None


async def market_params(
    session: AsyncSession, rt: Runtime, region: str, at: datetime | None = None
) -> MarketParams:
    """The region's settings; a region without any takes its band from the tariff in force at
    ``at`` (default: now) and the rest from the deployment defaults."""
    row = await repository.region_settings(session, region)
    params = params_of(rt, region, row)
    if row is not None:
        return params
    band = await tariff_band(session, rt, region, at or rt.clock.now())
    if band is None:
        return params
    return replace(params, min_price_micros=band[0], max_price_micros=band[1], source="tariff")


async def tariff_band(
    session: AsyncSession, rt: Runtime, region: str, at: datetime
) -> tuple[int, int] | None:
    """``(feed-in, import)`` of the region's tariff in force at ``at``, or None when the region
    has no tariff then (its band is the deployment's)."""
    price = await tariffs.price_at(session, rt, region, at)
    if price.source == "default":
        return None
    low, high = sorted((price.feed_in_price_micros, price.import_price_micros))
    return low, high


async def band_prices(session: AsyncSession, rt: Runtime, region: str) -> tuple[int, int]:
    """``(import, feed_in)`` of a region without a tariff: its band's ``max_price`` and
    ``min_price`` (the tariffs' default prices, handed to them by the app)."""
    params = params_of(rt, region, await repository.region_settings(session, region))
    return params.max_price_micros, params.min_price_micros


def default_band(rt: Runtime) -> tuple[int, int]:
    """The deployment's price band (micros per kWh) for a region without settings."""
    return money_to_micros(rt.settings.min_price), money_to_micros(rt.settings.max_price)


def params_of(
    rt: Runtime, region: str, row: RegionSettings | repository.RegionRow | None
) -> MarketParams:
    """The region's settings from its row, or the deployment defaults without one."""
    if row is not None:
        return MarketParams(
            region,
            row.mechanism,
            row.min_price_micros,
            row.max_price_micros,
            row.fee_bps,
            "region",
            row.updated_at,
        )
    s = rt.settings
    min_price, max_price = default_band(rt)
    return MarketParams(
        region, Mechanism(s.market_mechanism), min_price, max_price, s.fee_bps, "default", None
    )
