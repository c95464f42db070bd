"""Order entry into an epoch that already exists: the path where PostgreSQL inserts the order
with the statement that reads its checks. Every refusal must still leave nothing behind, racing
buys must not overspend, and the statement count per order is pinned."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.engine.default import CACHE_HIT

from gridex.auth.models import Role, User, UserStatus
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from tests.factories import API, Account, login, signed_in
from tests.ledger.helpers import fund
from tests.market.helpers import MARKET_SETTINGS, NEXT, place, start_clock, trader, wallet
from tests.meters.helpers import make_meter


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


async def _open_epoch(client: httpx.AsyncClient, rt: Runtime) -> None:
    """Someone else's order creates the next epoch (an auction epoch of ``north``)."""
    seller = await trader(client, rt, funds="0")
    await place(client, seller, side="sell", quantity_kwh=1, limit_price="0.9")


async def _order_count(client: httpx.AsyncClient, account: Account) -> int:
    response = await client.get(f"{API}/market/orders", headers=account.headers)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def _try_buy(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    """A limit buy of 1 kWh at 0.5 with ``headers``, answered as it is."""
    body = {"side": "buy", "type": "limit", "quantity_kwh": 1, "limit_price": "0.5"}
    return await client.post(f"{API}/market/orders", json=body, headers=headers)


@contextmanager
def _statements(rt: Runtime) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))
        context = args[4]
        compiled = getattr(context, "compiled", None)
        if compiled is not None and context.cache_hit != CACHE_HIT:
            # A statement compiled again on every order (say, an uncacheable construct) costs
            # more than the round trip it saves.
            seen.append(f"compiled for this order: {context.cache_hit}")

    engine = rt.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_orders_into_an_existing_epoch_are_stored_with_what_they_hold(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime)
    first = await place(
        client, buyer, side="buy", quantity_kwh=2, limit_price="0.25", client_order_id="a"
    )
    second = await place(client, buyer, side="sell", quantity_kwh=1.5, limit_price="0.75")
    assert first["reserved"] == "0.500000"
    assert first["epoch"] == NEXT.isoformat().replace("+00:00", "Z")
    assert second["reserved"] == "0.000000"
    listed = (await client.get(f"{API}/market/orders", headers=buyer.headers)).json()["items"]
    by_id = {o["id"]: o for o in listed}
    assert by_id[first["id"]] == first
    assert by_id[second["id"]] == second
    assert await wallet(runtime, buyer) == (9_500_000, 500_000, 0)


@pytest.mark.parametrize(
    ("kind", "body", "status", "code"),
    [
        ("bidirectional", {"side": "buy", "quantity_kwh": 100, "limit_price": "0.5"}, 409,
         "INSUFFICIENT_FUNDS"),
        ("bidirectional", {"side": "buy", "quantity_kwh": 1, "limit_price": "1.5"}, 422,
         "PRICE_OUT_OF_BOUNDS"),
        ("consumption", {"side": "sell", "quantity_kwh": 1, "limit_price": "0.5"}, 409,
         "NO_ELIGIBLE_METER"),
        ("production", {"side": "buy", "quantity_kwh": 1, "limit_price": "0.5"}, 409,
         "NO_ELIGIBLE_METER"),
    ],
)  # fmt: skip
async def test_refusals_into_an_existing_epoch_store_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    kind: str,
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    account = await trader(client, runtime, kind=kind)
    response = await client.post(
        f"{API}/market/orders", json={"type": "limit", **body}, headers=account.headers
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await _order_count(client, account) == 0
    assert await wallet(runtime, account) == (10_000_000, 0, 0)


async def test_the_region_band_applies_to_an_existing_epoch(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    admin = await signed_in(client, runtime, Role.admin)
    band = {"mechanism": "auction", "min_price": "0.2", "max_price": "0.4", "fee_bps": 100}
    saved = await client.put(f"{API}/market/regions/north", json=band, headers=admin.headers)
    assert saved.status_code == 200, saved.text
    buyer = await trader(client, runtime)
    refused = await _try_buy(client, buyer.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"] == {"min_price": "0.200000", "max_price": "0.400000"}
    accepted = await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.4")
    assert accepted["reserved"] == "0.400000"
    assert await _order_count(client, buyer) == 1


async def test_a_client_order_id_is_used_once_in_an_existing_epoch(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime)
    body = {"side": "buy", "quantity_kwh": 1, "limit_price": "0.5", "client_order_id": "x-1"}
    await place(client, buyer, **body)
    again = await client.post(
        f"{API}/market/orders", json={"type": "limit", **body}, headers=buyer.headers
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "CONFLICT"
    assert await _order_count(client, buyer) == 1
    assert await wallet(runtime, buyer) == (9_500_000, 500_000, 0)


async def test_a_buy_in_debt_is_refused_in_an_existing_epoch(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime, funds="0")
    async with runtime.db.sessionmaker() as session:
        await ledger.charge(
            session, at=clock.now(), user_id=buyer.id, amount_micros=1_000_000, description="x"
        )
        await session.commit()
    response = await _try_buy(client, buyer.headers)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "INSUFFICIENT_FUNDS"
    assert error["details"] == {"available": "-1.000000"}
    assert await _order_count(client, buyer) == 0
    # A sell does not need money.
    await place(client, buyer, side="sell", quantity_kwh=1, limit_price="0.5")


async def test_racing_buys_for_the_last_funds_cannot_both_win(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime, funds="1")
    body = {"side": "buy", "type": "limit", "quantity_kwh": 1, "limit_price": "0.6"}
    responses = await asyncio.gather(
        *(client.post(f"{API}/market/orders", json=body, headers=buyer.headers) for _ in range(4))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409], [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "INSUFFICIENT_FUNDS"
    }
    assert await _order_count(client, buyer) == 1
    assert await wallet(runtime, buyer) == (400_000, 600_000, 0)


async def test_statements_per_order(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    """PostgreSQL: a limit buy into an existing auction epoch is two statements (the checks,
    with the token's session, and the insert; the reservation) and a sell one, besides BEGIN
    and COMMIT; none compiled for the order."""
    if runtime.db.is_sqlite:
        pytest.skip("the folded insert is PostgreSQL's")
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime)
    # The first buy also creates the buyer's reserved account.
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.5")
    # The sell is priced above the buys, so that it does not cross the trader's own orders.
    for side, price, expected in (("buy", "0.5", 2), ("sell", "0.6", 1)):
        with _statements(runtime) as seen:
            await place(client, buyer, side=side, quantity_kwh=1, limit_price=price)
        assert len(seen) == expected, seen
    assert await _order_count(client, buyer) == 3


async def _set_status(rt: Runtime, account: Account, status: UserStatus) -> None:
    async with rt.db.sessionmaker() as session:
        await session.execute(update(User).where(User.id == account.id).values(status=status))
        await session.commit()


async def test_an_ended_session_places_nothing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    """After logout the token is refused for orders as everywhere else, and neither order nor
    reservation is stored."""
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime)
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.5")
    logout = await client.post(f"{API}/auth/logout", headers=buyer.headers)
    assert logout.status_code == 200, logout.text
    for side in ("buy", "sell"):
        refused = await client.post(
            f"{API}/market/orders",
            json={"side": side, "type": "limit", "quantity_kwh": 1, "limit_price": "0.5"},
            headers=buyer.headers,
        )
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "INVALID_TOKEN"
    await login(client, buyer)
    assert await _order_count(client, buyer) == 1
    assert await wallet(runtime, buyer) == (9_500_000, 500_000, 0)


@pytest.mark.parametrize(
    ("status", "http", "code"),
    [(UserStatus.suspended, 403, "ACCOUNT_SUSPENDED"), (UserStatus.deleted, 401, "INVALID_TOKEN")],
)
async def test_an_inactive_user_places_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    status: UserStatus,
    http: int,
    code: str,
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime)
    await place(client, buyer, side="buy", quantity_kwh=1, limit_price="0.5")
    await _set_status(runtime, buyer, status)
    refused = await _try_buy(client, buyer.headers)
    assert refused.status_code == http, refused.text
    assert refused.json()["error"]["code"] == code
    assert await wallet(runtime, buyer) == (9_500_000, 500_000, 0)
    await _set_status(runtime, buyer, UserStatus.active)
    assert await _order_count(client, buyer) == 1


async def test_without_a_region_the_callers_own_or_their_meters(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    """No ``region`` in the order: the user's region; a user without one trades where their
    only eligible meter is."""
    start_clock(clock)
    await _open_epoch(client, runtime)
    own = await trader(client, runtime)
    placed = await place(client, own, side="buy", quantity_kwh=1, limit_price="0.5")
    assert placed["region"] == "north"
    nowhere = await signed_in(client, runtime, Role.prosumer, region=None)
    await make_meter(client, nowhere, kind="bidirectional", region="north")
    await fund(runtime, nowhere.id, 1_000_000)
    placed = await place(client, nowhere, side="buy", quantity_kwh=1, limit_price="0.5")
    assert placed["region"] == "north"
    assert await wallet(runtime, nowhere) == (500_000, 500_000, 0)


async def test_an_idempotent_order_is_placed_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime)
    headers = {**buyer.headers, "Idempotency-Key": "order-1"}
    first = await _try_buy(client, headers)
    again = await _try_buy(client, headers)
    assert first.status_code == again.status_code == 201, again.text
    assert first.json() == again.json()
    assert await _order_count(client, buyer) == 1
    assert await wallet(runtime, buyer) == (9_500_000, 500_000, 0)


async def test_an_api_key_cannot_place_orders(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    await _open_epoch(client, runtime)
    buyer = await trader(client, runtime)
    created = await client.post(
        f"{API}/me/api-keys",
        json={"name": "head-end", "scopes": ["readings:write"]},
        headers=buyer.headers,
    )
    assert created.status_code == 201, created.text
    refused = await _try_buy(client, {"X-API-Key": created.json()["key"]})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "FORBIDDEN"
    missing = await _try_buy(client, {})
    assert missing.status_code == 401, missing.text
    garbled = await _try_buy(client, {"Authorization": "Bearer not-a-token"})
    assert garbled.status_code == 401, garbled.text
    assert garbled.json()["error"]["code"] == "INVALID_TOKEN"
    assert await _order_count(client, buyer) == 0
    assert await wallet(runtime, buyer) == (10_000_000, 0, 0)
