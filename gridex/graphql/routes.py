"""``/graphql``: queries over HTTP (POST, or GET for queries), the ``marketEvents``
subscription over WebSocket (``graphql-transport-ws``, or the older ``graphql-ws``), and
GraphiQL in development only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import cast

from starlette.requests import HTTPConnection
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from gridex.core.runtime import Runtime
from gridex.graphql.context import Context
from gridex.graphql.schema import schema


async def _context(connection: HTTPConnection) -> AsyncIterator[Context]:
    """One context per operation (per socket for a subscription): the bearer token of the
    ``Authorization`` header (a socket may send it in its ``connection_init`` payload instead),
    and a session closed when the operation ends."""
    runtime: Runtime = connection.app.state.runtime
    header = connection.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else None
    context = Context(rt=runtime, token=token, api_key=bool(connection.headers.get("x-api-key")))
    try:
        yield context
    finally:
        await context.close()


def graphql_router(rt: Runtime) -> GraphQLRouter[Context, None]:
    return GraphQLRouter(
        schema,
        context_getter=cast(Callable[..., Context], _context),
        graphql_ide="graphiql" if rt.settings.env == "development" else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        include_in_schema=False,
    )
