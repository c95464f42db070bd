"""The grid prices in force for a region at a time: what settlement charges for a shortfall
(grid import) and credits for unconsumed energy (feed-in).

Settlement uses the prices of the region's tariff in force during the epoch; a region without a
tariff uses its price band, ``max_price`` for import and ``min_price`` for feed-in.
There is no tariffs module yet, so every region is "without a tariff" today; when tariffs land,
:func:`grid_prices` asks them first and falls back to the band.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.runtime import Runtime
from gridex.market.regions import market_params


@dataclass(frozen=True, slots=True)
class GridPrices:
    """Micros per kWh."""

    import_price_micros: int
    feed_in_price_micros: int
    source: Literal["tariff", "band"]


async def grid_prices(session: AsyncSession, rt: Runtime, region: str, at: datetime) -> GridPrices:
    """The grid import and feed-in prices of ``region`` in force at ``at``.

    Without tariffs the band of the region's market settings (or the deployment defaults) is
    used as it stands now: settings carry no history, so ``at`` only matters once tariffs,
    which have effective dates, answer here.
    """
    params = await market_params(session, rt, region)
    return GridPrices(params.max_price_micros, params.min_price_micros, "band")
