"""Online/offline transitions of a meter: a live event and a durable row, always together.

The ``device_online``/``device_offline`` event on the ``meter:<id>`` channel is for dashboards;
the ``meter_status_events`` row is what the alerts read to raise and clear ``device_offline``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.pubsub import PubSub, emit
from gridex.meters.models import MeterStatusEvent


def status_changed(
    session: AsyncSession,
    pubsub: PubSub,
    meter_id: uuid.UUID,
    status: str,
    *,
    reason: str,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """Record that the meter went ``status`` (online | offline) for ``reason``."""
    emit(
        session, pubsub, [f"meter:{meter_id}"], f"device_{status}", {"meter_id": str(meter_id)}, now
    )
    session.add(
        MeterStatusEvent(meter_id=meter_id, at=now, status=status, reason=reason, details=details)
    )
