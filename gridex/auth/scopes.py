"""Which routes an API key may call: the one table.

A route is named by its method and its path template as the OpenAPI document shows it
(``GET /api/v1/meters/{meter_id}``). A key reaches a route when one of its scopes lists the
route below; every route not listed refuses API keys (403 ``FORBIDDEN``), whatever the route's
code says. New routes are therefore closed to keys until they are added here, and the scope
test (``tests/auth/test_scopes.py``) calls every route of the app with a key of every scope.

Ownership still applies after the table: a key acts as its owner (their meters, orders,
wallet), and a key bound to a meter reaches that meter only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gridex.core.config import API_PREFIX

# A route every valid key may call, whatever its scopes (a key asking what it is).
ANY_SCOPE: Final = "*"

_ROUTES_OF_SCOPE: Final[Mapping[str, tuple[str, ...]]] = {
    # Devices and head-ends sending metered intervals.
    "readings:write": (
        "POST /meters/{meter_id}/readings",
        "POST /readings/batch",
    ),
    # Replacing a stored reading (operators' integrations; the owner must be staff).
    "readings:correct": ("PUT /meters/{meter_id}/readings/{timestamp}",),
    # Reading meters and their series.
    "meters:read": (
        "GET /meters",
        "GET /meters/{meter_id}",
        "GET /meters/{meter_id}/latest",
        "GET /meters/{meter_id}/readings",
        "GET /meters/{meter_id}/stats",
        "GET /meters/{meter_id}/analytics",
        "GET /meters/{meter_id}/compare",
        "GET /meters/{meter_id}/commands/{command_id}",
        "GET /meters/{meter_id}/export/green-button",
        "GET /analytics/energy",
        "GET /reports/consumption",
        "GET /tariffs/estimate",
    ),
    # Changing the owner's meters: their details, device commands, Green Button imports.
    "meters:write": (
        "PATCH /meters/{meter_id}",
        "POST /meters/{meter_id}/commands",
        "POST /meters/{meter_id}/import/green-button",
    ),
    # Public market data, as the owner sees it (their own orders flagged in the book).
    "market:read": (
        "GET /market/epochs",
        "GET /market/epochs/current",
        "GET /market/epochs/{epoch}",
        "GET /market/orderbook",
        "GET /market/data",
        "GET /market/history",
        "GET /market/trades/recent",
        "GET /market/regions",
        "GET /market/regions/{region}",
        "GET /analytics/market",
        "GET /tariffs/current",
        "GET /tariffs/current/{region}",
        "GET /tariffs/history",
        "GET /tariffs/estimate",
        "GET /tariffs/forecast",
    ),
    # Trading for the owner: orders and their own trades.
    "market:trade": (
        "POST /market/orders",
        "GET /market/orders",
        "GET /market/orders/{order_id}",
        "PATCH /market/orders/{order_id}",
        "DELETE /market/orders/{order_id}",
        "GET /market/trades",
        "GET /analytics/trading",
    ),
    # The owner's balances, statements, settlements and invoices (read only: money never moves
    # through a key, so paying or disputing an invoice takes the owner's access token).
    "wallet:read": (
        "GET /wallet",
        "GET /wallet/transactions",
        "GET /wallet/statements",
        "GET /market/settlements",
        "GET /billing/invoices",
        "GET /billing/invoices/{invoice_id}",
        "GET /billing/invoices/{invoice_id}/pdf",
        "GET /billing/payments",
        "GET /billing/current-cycle",
        "GET /billing/estimate",
        "GET /analytics/investments",
        "GET /reports/revenue",
    ),
    ANY_SCOPE: ("GET /auth/validate",),
}

# The scopes a key can be created with.
SCOPES: Final[frozenset[str]] = frozenset(_ROUTES_OF_SCOPE) - {ANY_SCOPE}


def _route_key(entry: str) -> tuple[str, str]:
    method, _, path = entry.partition(" ")
    return method, API_PREFIX + path


def _accepted() -> dict[tuple[str, str], frozenset[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for scope, routes in _ROUTES_OF_SCOPE.items():
        for entry in routes:
            table.setdefault(_route_key(entry), set()).add(scope)
    return {route: frozenset(scopes) for route, scopes in table.items()}


# (method, path template) -> the scopes that reach it.
ROUTE_SCOPES: Final[Mapping[tuple[str, str], frozenset[str]]] = _accepted()


def routes_of_scope(scope: str) -> frozenset[tuple[str, str]]:
    """The (method, path template) pairs a key with ``scope`` may call."""
    return frozenset(_route_key(entry) for entry in _ROUTES_OF_SCOPE.get(scope, ()))


def scopes_for(method: str, path: str) -> frozenset[str]:
    """The scopes that reach a route; empty: the route refuses API keys."""
    return ROUTE_SCOPES.get((method, path), frozenset())


def key_may_call(key_scopes: frozenset[str] | set[str] | list[str], method: str, path: str) -> bool:
    accepted = scopes_for(method, path)
    return ANY_SCOPE in accepted or not accepted.isdisjoint(key_scopes)
