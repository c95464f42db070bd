"""The grid prices in force for a region at a time: what settlement charges for a shortfall
(grid import) and credits for unconsumed energy (feed-in).

They are the tariff's (:func:`gridex.tariffs.service.price_at`: an override, else the
time-of-use band of the schedule in force); a region without a tariff uses its price band,
``max_price`` for import and ``min_price`` for feed-in (the tariffs' default prices, wired in
the app).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.runtime import Runtime
from gridex.tariffs import service as tariffs


@dataclass(frozen=True, slots=True)
class GridPrices:
    """Micros per kWh."""

    import_price_micros: int
    feed_in_price_micros: int
    source: Literal["tariff", "band"]


async def grid_prices(session: AsyncSession, rt: Runtime, region: str, at: datetime) -> GridPrices:
    """The grid import and feed-in prices of ``region`` in force at ``at``."""
    price = await tariffs.price_at(session, rt, region, at)
    return GridPrices(
        price.import_price_micros,
        price.feed_in_price_micros,
        "band" if price.source == "default" else "tariff",
    )
