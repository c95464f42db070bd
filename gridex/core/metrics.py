"""Prometheus metrics. With several workers, ``PROMETHEUS_MULTIPROC_DIR`` aggregates them.

What a unit of work did is counted only once it commits (``after_commit``): an order placed in a
transaction that then rolls back was never placed."""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

HTTP_REQUESTS = Counter(
    "gridex_http_requests_total", "HTTP requests by route template", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "gridex_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter("gridex_rate_limited_total", "Requests refused by a rate limit", ["kind"])
RATE_LIMIT_FALLBACKS = Counter(
    "gridex_rate_limit_fallbacks_total",
    "Requests limited in process memory because the shared store (Redis) was unreachable",
)
EVENTS_DROPPED = Counter(
    "gridex_events_dropped_total", "Real-time events that could not be published", ["type"]
)


# Market, settlement and meter traffic.
ORDERS = Counter("gridex_orders_total", "Orders placed", ["side", "type"])
ORDERS_REFUSED = Counter("gridex_orders_refused_total", "Orders refused, by error code", ["code"])
TRADES = Counter("gridex_trades_total", "Trades executed", ["region"])
TRADED_ENERGY = Counter("gridex_traded_energy_wh_total", "Energy traded, in Wh", ["region"])
CLEARING_SECONDS = Histogram(
    "gridex_clearing_duration_seconds",
    "Time to clear one epoch (match, fill, move the money), by mechanism",
    ["mechanism"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SETTLEMENTS = Counter(
    "gridex_settlements_total", "Epochs settled (kind: settlement or resettlement)", ["kind"]
)
SETTLEMENT_SECONDS = Histogram(
    "gridex_settlement_duration_seconds",
    "Time to settle one epoch against its meter readings",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MQTT_MESSAGES = Counter(
    "gridex_mqtt_messages_total",
    "MQTT messages received, by topic kind (readings, status, ack) and outcome",
    ["topic", "outcome"],
)

_AFTER_COMMIT = "gridex.metrics.after_commit"
log = structlog.get_logger(__name__)


def after_commit(session: AsyncSession | Session, record: Callable[[], None]) -> None:
    """Run ``record`` (count a metric, write a log line) once ``session`` commits; dropped if
    it rolls back."""
    session.info.setdefault(_AFTER_COMMIT, []).append(record)


@event.listens_for(Session, "after_commit")
def _record_after_commit(session: Session) -> None:
    for record in session.info.pop(_AFTER_COMMIT, ()):
        try:
            record()
        except Exception:  # a broken metric never fails committed work
            log.exception("metric_record_failed")


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, _previous: object) -> None:
    session.info.pop(_AFTER_COMMIT, None)


WS_CONNECTIONS = Gauge(
    "gridex_ws_connections",
    "Open WebSocket connections (signed in) on /ws",
    multiprocess_mode="livesum",
)
WS_SUBSCRIPTIONS = Gauge(
    "gridex_ws_channels",
    "Channels this worker subscribes to on the internal pub/sub for its sockets",
    multiprocess_mode="livesum",
)
WS_MESSAGES = Counter(
    "gridex_ws_messages_total", "Event messages queued for WebSocket clients (one per socket)"
)
WS_DROPPED = Counter(
    "gridex_ws_messages_dropped_total",
    "Event messages not delivered because the socket's send queue was full (it is closed)",
)
WS_CLOSED = Counter(
    "gridex_ws_closed_total", "WebSocket connections closed by the server, by close code", ["code"]
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
