"""A region's market settings in force: its own row, or the deployment's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.runtime import Runtime
from gridex.core.units import money_to_micros
from gridex.market import repository
from gridex.market.models import Mechanism, RegionSettings


@dataclass(frozen=True, slots=True)
class MarketParams:
    region: str
    mechanism: Mechanism
    min_price_micros: int
    max_price_micros: int
    fee_bps: int
    source: str
    updated_at: datetime | None


async def market_params(session: AsyncSession, rt: Runtime, region: str) -> MarketParams:
    """The region's settings, or the deployment defaults for a region without any."""
    return params_of(rt, region, await repository.region_settings(session, region))


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
