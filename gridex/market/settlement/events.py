"""``settlement_completed``, published after commit: the epoch on ``market`` and
``epoch:<start>``, each participant's own view on ``user:<id>``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import utc_iso
from gridex.core.metrics import SETTLEMENT_SECONDS, SETTLEMENTS, after_commit
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.market.models import Epoch, SettlementPosition
from gridex.market.views import epoch_event

log = structlog.get_logger(__name__)


def record_settlement(
    session: AsyncSession,
    epoch: Epoch,
    positions: list[SettlementPosition],
    started: float,
    *,
    adjustment: bool,
) -> None:
    """A log line and the settlement metrics once the (re)settlement commits; ``started`` is
    its ``time.perf_counter()`` at the start."""
    fields = {
        "epoch": utc_iso(epoch.start),
        "region": epoch.region,
        "participants": len(positions),
        "charged": micros_to_money(sum(p.charged_micros for p in positions)),
        "credited": micros_to_money(sum(p.credited_micros for p in positions)),
    }
    kind = "resettlement" if adjustment else "settlement"

    def record() -> None:
        seconds = time.perf_counter() - started
        SETTLEMENTS.labels(kind).inc()
        if not adjustment:
            SETTLEMENT_SECONDS.observe(seconds)
        log.info(f"epoch_{kind}", **fields, ms=round(seconds * 1000, 1))

    after_commit(session, record)


def position_event(
    epoch: Epoch, position: SettlementPosition, *, adjustment: bool
) -> dict[str, Any]:
    """A participant's own view of its settlement (after any adjustment)."""
    return {
        "region": epoch.region,
        "epoch": utc_iso(epoch.start),
        "adjustment": adjustment,
        "sold_kwh": wh_to_kwh(position.sold_wh),
        "bought_kwh": wh_to_kwh(position.bought_wh),
        "exported_kwh": wh_to_kwh(position.exported_wh),
        "imported_kwh": wh_to_kwh(position.imported_wh),
        "received": micros_to_money(position.received_micros),
        "fees": micros_to_money(position.fees_micros),
        "charged": micros_to_money(position.charged_micros),
        "credited": micros_to_money(position.credited_micros),
    }


def emit_settlement(
    session: AsyncSession,
    rt: Runtime,
    epoch: Epoch,
    positions: Iterable[SettlementPosition],
    now: datetime,
    *,
    adjustment: bool,
) -> None:
    public = {**epoch_event(epoch, now), "adjustment": adjustment}
    emit(
        session,
        rt.pubsub,
        ("market", f"epoch:{utc_iso(epoch.start)}"),
        "settlement_completed",
        public,
        now,
    )
    for position in positions:
        emit(
            session,
            rt.pubsub,
            (f"user:{position.user_id}",),
            "settlement_completed",
            position_event(epoch, position, adjustment=adjustment),
            now,
        )
