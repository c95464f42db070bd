"""API-key scopes come from one table (``gridex.auth.scopes``): a key reaches exactly the routes
its scopes list there, and every other route refuses it, on every route of the app."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gridex.app import create_app
from gridex.auth.models import Role
from gridex.auth.scopes import ANY_SCOPE, ROUTE_SCOPES, SCOPES, key_may_call
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.authz.routes import operations
from tests.factories import API, signed_in
from tests.market.helpers import MARKET_SETTINGS, start_clock, trader
from tests.meters.helpers import make_key, make_meter


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


def _refused_by_table(response: httpx.Response) -> bool:
    if response.status_code != 403:
        return False
    error = response.json()["error"]
    return error["code"] == "FORBIDDEN" and "accepted_scopes" in error.get("details", {})


def test_table_names_only_routes_that_exist() -> None:
    app = create_app()
    existing = {(op.method, op.path) for op in operations(app)}
    assert set(ROUTE_SCOPES) - existing == set()


def test_every_scope_a_key_can_have_reaches_some_route() -> None:
    for scope in SCOPES:
        assert any(scope in accepted for accepted in ROUTE_SCOPES.values()), scope
    assert ANY_SCOPE not in SCOPES


@pytest.mark.parametrize("scope", sorted(SCOPES))
async def test_key_reaches_exactly_its_routes(
    client: httpx.AsyncClient, runtime: Runtime, scope: str
) -> None:
    owner = await signed_in(client, runtime, role=Role.operator)
    await make_meter(client, owner)
    headers = await make_key(client, owner, [scope])
    wrong: list[str] = []
    for op in operations(client._transport.app):  # type: ignore[attr-defined]
        if not op.secured:
            continue
        body = {} if op.method in ("POST", "PUT", "PATCH") else None
        response = await client.request(op.method, op.url(), json=body, headers=headers)
        assert response.status_code != 500, (op.key, response.text)
        assert response.status_code != 401, (op.key, response.text)
        allowed = key_may_call({scope}, op.method, op.path)
        if allowed == _refused_by_table(response):
            wrong.append(f"{op.key} -> {response.status_code} {response.text[:120]}")
    assert wrong == [], f"scope {scope!r}:\n" + "\n".join(wrong)


async def test_readings_key_no_longer_reads_the_market(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = await signed_in(client, runtime)
    headers = await make_key(client, owner, ["readings:write"])
    data = await client.get(f"{API}/market/data", headers=headers)
    assert data.status_code == 403
    assert data.json()["error"]["details"]["accepted_scopes"] == ["market:read"]
    market = await make_key(client, owner, ["market:read"])
    assert (await client.get(f"{API}/market/data", headers=market)).status_code == 200


async def test_trade_and_wallet_scopes_are_usable(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = await signed_in(client, runtime)
    wallet = await make_key(client, owner, ["wallet:read"])
    got = await client.get(f"{API}/wallet", headers=wallet)
    assert got.status_code == 200, got.text
    assert got.json()["available"] == "0.000000"
    trade = await make_key(client, owner, ["market:trade"])
    orders = await client.get(f"{API}/market/orders", headers=trade)
    assert orders.status_code == 200, orders.text
    assert orders.json()["items"] == []
    # A trading key does not read the wallet, nor move money.
    assert (await client.get(f"{API}/wallet", headers=trade)).status_code == 403
    topup = await client.post(f"{API}/wallet/topups", json={"amount": "5"}, headers=trade)
    assert topup.status_code == 403


def test_docs_list_the_same_routes() -> None:
    text = (Path(__file__).parents[2] / "docs" / "auth.md").read_text()
    section = text[text.index("### Scopes") :]
    for (method, path), scopes in ROUTE_SCOPES.items():
        route = f"`{method} {path.removeprefix(API)}`"
        for scope in scopes:
            name = "any scope" if scope == ANY_SCOPE else f"`{scope}`"
            row = next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
            assert route in row, (scope, route)


async def test_trading_key_places_and_cancels_its_owners_order(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    owner = await trader(client, runtime)
    trade = await make_key(client, owner, ["market:trade"])
    body = {"side": "buy", "type": "limit", "quantity_kwh": 1, "limit_price": "0.5"}
    placed = await client.post(f"{API}/market/orders", json=body, headers=trade)
    assert placed.status_code == 201, placed.text
    assert placed.json()["reserved"] == "0.500000"
    mine = await client.get(f"{API}/market/orders/{placed.json()['id']}", headers=owner.headers)
    assert mine.status_code == 200
    cancelled = await client.delete(f"{API}/market/orders/{placed.json()['id']}", headers=trade)
    assert cancelled.json()["status"] == "cancelled"
    # A read-only market key cannot trade.
    reader = await make_key(client, owner, ["market:read"])
    refused = await client.post(f"{API}/market/orders", json=body, headers=reader)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["accepted_scopes"] == ["market:trade"]
