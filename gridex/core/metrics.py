"""Prometheus metrics. With several workers, ``PROMETHEUS_MULTIPROC_DIR`` aggregates them."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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
