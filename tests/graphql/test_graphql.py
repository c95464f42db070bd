"""GraphQL through /graphql: the same objects and the same authorisation as REST, cursor
pagination, a constant number of SQL statements for a page of meters with their last reading,
depth and cost limits, and the marketEvents subscription over the runtime's pub/sub."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, cast

import httpx
from sqlalchemy import event

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.graphql.context import Context
from gridex.graphql.routes import graphql_router
from gridex.graphql.schema import schema
from tests.factories import API, Account, signed_in
from tests.meters.helpers import NOW, make_key, make_meter, reading

METERS = """
query($first: Int, $after: String) {
  meters(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id serial capacityKw lastReading { timestamp energyConsumedKwh } } }
  }
}
"""


async def gql(
    client: httpx.AsyncClient,
    query: str,
    account: Account | None = None,
    headers: dict[str, str] | None = None,
    **variables: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers=headers if headers is not None else (account.headers if account else {}),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


@contextmanager
def counted(rt: Runtime) -> Iterator[list[str]]:
    """The SQL statements run inside the block."""
    statements: list[str] = []
    engine = rt.db.engine.sync_engine

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def _read(
    client: httpx.AsyncClient, owner: Account, meter: dict[str, Any], kwh: float
) -> None:
    stored = await client.post(
        f"{API}/meters/{meter['id']}/readings",
        json={"readings": [reading(NOW, kwh)]},
        headers=owner.headers,
    )
    assert stored.status_code in (200, 201), stored.text


async def test_objects_match_rest_and_foreign_ones_are_null_with_not_found(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    other = await signed_in(client, runtime)
    mine = await make_meter(client, owner)
    theirs = await make_meter(client, other)
    await _read(client, owner, mine, 0.75)

    body = await gql(
        client,
        """
        query($theirs: ID!, $mine: ID!) {
          me { id username role region }
          wallet { available reserved currency }
          mine: meter(id: $mine) {
            id serial readings(interval: "raw") { points { start consumedKwh } }
          }
          theirs: meter(id: $theirs) { id serial }
        }
        """,
        owner,
        mine=mine["id"],
        theirs=theirs["id"],
    )
    me = (await client.get(f"{API}/me", headers=owner.headers)).json()
    wallet = (await client.get(f"{API}/wallet", headers=owner.headers)).json()
    data = body["data"]
    assert data["me"] == {k: me[k] for k in ("id", "username", "role", "region")}
    assert data["wallet"] == {k: wallet[k] for k in ("available", "reserved", "currency")}
    assert data["mine"]["serial"] == mine["serial"]
    assert data["mine"]["readings"]["points"][0]["consumedKwh"] == 0.75
    # Another user's meter does not exist for this caller, as on REST.
    assert data["theirs"] is None
    assert codes(body) == ["NOT_FOUND"]
    assert body["errors"][0]["path"] == ["theirs"]

    listed = await gql(client, METERS, owner)
    nodes = [e["node"] for e in listed["data"]["meters"]["edges"]]
    assert [n["id"] for n in nodes] == [mine["id"]]
    assert nodes[0]["lastReading"]["energyConsumedKwh"] == 0.75
    assert nodes[0]["lastReading"]["timestamp"] == "2026-03-04T12:00:00Z"


async def test_callers_without_a_user_token_get_errors_not_data(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = await signed_in(client, runtime)
    await make_meter(client, owner)
    anonymous = await gql(client, METERS, headers={})
    assert anonymous["data"] is None
    assert codes(anonymous) == ["AUTHENTICATION_REQUIRED"]
    key = await make_key(client, owner, ["meters:read"])
    with_key = await gql(client, METERS, headers=key)
    assert with_key["data"] is None
    assert codes(with_key) == ["FORBIDDEN"]
    forged = await gql(client, "{ me { id } }", headers={"Authorization": "Bearer nope"})
    assert codes(forged) == ["INVALID_TOKEN"]
    # A signed-out session's token stops working at once, as on REST.
    await client.post(f"{API}/auth/logout", headers=owner.headers)
    ended = await gql(client, "{ me { id } }", owner)
    assert codes(ended) == ["INVALID_TOKEN"]


async def test_cursor_pagination_walks_every_meter_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    operator = await signed_in(client, runtime, Role.operator)
    owner = await signed_in(client, runtime)
    made = {(await make_meter(client, owner))["id"] for _ in range(5)}
    seen: list[str] = []
    after = None
    while True:
        page = (await gql(client, METERS, owner, first=2, after=after))["data"]["meters"]
        assert page["totalCount"] == 5
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == 5
    assert set(seen) == made
    # An operator sees every meter, including these.
    staff = (await gql(client, METERS, operator, first=100))["data"]["meters"]
    assert made <= {e["node"]["id"] for e in staff["edges"]}
    bad = await gql(client, METERS, owner, after="not-a-cursor")
    assert codes(bad) == ["VALIDATION_ERROR"]


async def test_a_page_of_meters_with_their_last_reading_is_a_constant_number_of_statements(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(NOW)
    owner = await signed_in(client, runtime)
    meters = [await make_meter(client, owner) for _ in range(12)]
    for meter in meters:
        await _read(client, owner, meter, 0.5)

    async def statements(first: int) -> int:
        with counted(runtime) as seen:
            body = await gql(client, METERS, owner, first=first)
        assert len(body["data"]["meters"]["edges"]) == first
        assert all(e["node"]["lastReading"] for e in body["data"]["meters"]["edges"])
        return len(seen)

    assert await statements(2) == await statements(12)


async def test_costly_queries_are_refused_before_they_run(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = await signed_in(client, runtime)
    await make_meter(client, owner)
    fair = "{ meters(first: 100) { edges { node { readings(first: 50) { points { start } } } } } }"
    assert "errors" not in await gql(client, fair, owner)
    costly = fair.replace("readings(first: 50)", "readings(first: 10000)")
    with counted(runtime) as statements:
        body = await gql(client, costly, owner)
    assert statements == []  # refused before authentication or any resolver
    assert body["data"] is None
    assert codes(body) == ["VALIDATION_ERROR"]
    assert "more than" in body["errors"][0]["message"]


async def test_market_events_arrive_over_the_subscription(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = await signed_in(client, runtime)
    context = Context(rt=runtime, token=owner.access_token)
    stream = await schema.subscribe(
        'subscription { marketEvents(region: "north") { type data ts } }',
        context_value=context,
    )
    assert not isinstance(stream, Exception)
    first = asyncio.ensure_future(stream.__anext__())  # type: ignore[union-attr]
    for _ in range(50):  # until the subscription is listening
        await asyncio.sleep(0.01)
        await runtime.pubsub.publish(
            "market", {"type": "trade", "data": {"region": "south"}, "ts": "2026-03-04T12:00:00Z"}
        )
        await runtime.pubsub.publish(
            "market", {"type": "trade", "data": {"region": "north", "price": "0.1"}, "ts": None}
        )
        if first.done():
            break
    result = await first
    assert result.errors is None
    assert result.data == {
        "marketEvents": {"type": "trade", "data": {"region": "north", "price": "0.1"}, "ts": None}
    }
    await stream.aclose()  # type: ignore[union-attr]

    anonymous = await schema.subscribe(
        "subscription { marketEvents { type } }", context_value=Context(rt=runtime, token=None)
    )
    refused = await anonymous.__anext__()  # type: ignore[union-attr]
    assert refused.errors
    assert refused.errors[0].extensions["code"] == "AUTHENTICATION_REQUIRED"


async def test_graphiql_is_served_in_development_only(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert runtime.settings.env != "development"
    assert "graphiql" not in page.text.lower()
    development = SimpleNamespace(settings=SimpleNamespace(env="development"))
    assert graphql_router(cast(Runtime, development)).graphql_ide == "graphiql"
    assert graphql_router(runtime).graphql_ide is None
