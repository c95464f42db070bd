"""The GraphQL schema: the root fields of the API contract, each resolved by the service REST
uses for the same object, with the caller REST would see (a foreign object is ``null`` with a
``NOT_FOUND`` error, never another user's data)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, Any, cast, get_args

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info

from gridex.auth.schemas import UserOut
from gridex.core.errors import ValidationFailed
from gridex.core.pagination import Page, paginate
from gridex.graphql.context import Context
from gridex.graphql.errors import ErrorCodes
from gridex.graphql.limits import MAX_DEPTH, CostLimit
from gridex.graphql.pagination import Connection, connection, window
from gridex.graphql.types import SCALARS, DateTime, from_model, object_type
from gridex.ledger import service as ledger
from gridex.ledger.schemas import WalletOut
from gridex.market import service as market
from gridex.market.models import EpochState, OrderStatus, Side
from gridex.market.schemas import EpochOut, OrderOut, TradeOut
from gridex.meters import service as meters
from gridex.meters import telemetry
from gridex.meters.models import MeterStatus
from gridex.meters.schemas import Interval, MeterOut, PointsOut

Info_ = Info[Context, None]


def _time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 argument with a zone, as REST's query parameters take it."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed(f"{name} is not an ISO 8601 time", details={"field": name}) from exc
    if parsed.tzinfo is None:
        raise ValidationFailed(f"{name} needs a time zone (Z)", details={"field": name})
    return parsed


async def _readings(
    root: Any,
    info: Info_,
    from_: Annotated[str | None, strawberry.argument(name="from")] = None,
    to: str | None = None,
    interval: str = "raw",
    first: int = 1000,
) -> Points:
    """The meter's series, as `GET /meters/{id}/readings` (`raw`, `15m`, `1h`, `1d`, `1mo`)."""
    if interval not in get_args(Interval):
        raise ValidationFailed(
            f"interval must be one of {', '.join(get_args(Interval))}",
            details={"field": "interval"},
        )
    if not 1 <= first <= 10_000:
        raise ValidationFailed("first must be between 1 and 10000", details={"field": "first"})
    ctx = info.context
    principal = await ctx.principal()
    async with ctx.db() as session:
        meter = await meters.get_meter(session, principal, uuid.UUID(str(root.id)))
        points = await telemetry.points(
            session,
            ctx.rt,
            meter,
            cast(Interval, interval),
            _time(from_, "from"),
            _time(to, "to"),
            None,
            first,
        )
    return cast(Points, from_model(points))


Points = object_type(PointsOut)
Meter = object_type(MeterOut, extra={"readings": strawberry.field(resolver=_readings)})
Order = object_type(OrderOut)
Trade = object_type(TradeOut)
Epoch = object_type(EpochOut)
User = object_type(UserOut)
Wallet = object_type(WalletOut)


@strawberry.type
class MarketEvent:
    type: str
    data: JSON
    ts: DateTime | None


@strawberry.type
class Query:
    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Info_) -> User:
        principal = await info.context.principal()
        return from_model(UserOut.model_validate(principal.user))

    @strawberry.field(description="Own meters; operators and admins see every meter.")
    async def meters(
        self,
        info: Info_,
        first: int | None = None,
        after: str | None = None,
        region: str | None = None,
        status: MeterStatus | None = None,
    ) -> Connection[Meter]:
        ctx = info.context
        principal = await ctx.principal()
        at = window(first, after)
        async with ctx.db() as session:
            query = meters.meter_query(principal, region=region, status=status)
            rows, total = await paginate(session, query, at)
            page = Page.build(await meters.meter_outs(session, rows), total, at)
        return connection(page, at)

    @strawberry.field(description="One meter, if the caller may see it.")
    async def meter(self, info: Info_, id: strawberry.ID) -> Meter | None:
        ctx = info.context
        principal = await ctx.principal()
        async with ctx.db() as session:
            found = await meters.get_meter(session, principal, _uuid(id))
            return from_model(await meters.meter_out(session, found))

    @strawberry.field(description="Own orders, newest first.")
    async def orders(
        self,
        info: Info_,
        first: int | None = None,
        after: str | None = None,
        status: OrderStatus | None = None,
        side: Side | None = None,
        epoch: str | None = None,
    ) -> Connection[Order]:
        ctx = info.context
        principal = await ctx.principal()
        at = window(first, after)
        async with ctx.db() as session:
            since = _time(epoch, "epoch")
            page = await market.list_orders(
                session, ctx.rt, principal, at, status=status, side=side, epoch=since
            )
        return connection(page, at)

    @strawberry.field(description="Own trades.")
    async def trades(
        self,
        info: Info_,
        first: int | None = None,
        after: str | None = None,
        epoch: str | None = None,
    ) -> Connection[Trade]:
        ctx = info.context
        principal = await ctx.principal()
        at = window(first, after)
        async with ctx.db() as session:
            page = await market.own_trades(session, ctx.rt, principal, at, _time(epoch, "epoch"))
        return connection(page, at)

    @strawberry.field(description="Epochs of a region (the caller's own by default).")
    async def epochs(
        self,
        info: Info_,
        first: int | None = None,
        after: str | None = None,
        region: str | None = None,
        from_: Annotated[str | None, strawberry.argument(name="from")] = None,
        to: str | None = None,
        state: EpochState | None = None,
    ) -> Connection[Epoch]:
        ctx = info.context
        principal = await ctx.principal()
        at = window(first, after)
        name = region or principal.user.region
        if not name:
            raise ValidationFailed("region is required", details={"field": "region"})
        async with ctx.db() as session:
            page = await market.list_epochs(
                session,
                ctx.rt,
                name,
                at,
                since=_time(from_, "from"),
                until=_time(to, "to"),
                state=state,
            )
        return connection(page, at)

    @strawberry.field(description="The caller's balances.")
    async def wallet(self, info: Info_) -> Wallet:
        ctx = info.context
        principal = await ctx.principal()
        async with ctx.db() as session:
            return from_model(await ledger.wallet(session, ctx.rt, principal.user))


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise ValidationFailed("id is not a UUID", details={"field": "id"}) from exc


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Market events as `/ws` sends them on its `market` channel (order book "
        "changes, trades, clearing, settlement), optionally of one region."
    )
    async def market_events(
        self, info: Info_, region: str | None = None
    ) -> AsyncGenerator[MarketEvent, None]:
        ctx = info.context
        await ctx.principal()
        await ctx.close()  # nothing more to read: the session is not held while streaming
        async with ctx.rt.pubsub.subscribe("market") as events:
            async for message in events:
                data = message.get("data") or {}
                if region is not None and data.get("region") not in (None, region):
                    continue
                yield MarketEvent(
                    type=str(message.get("type")), data=cast(JSON, data), ts=message.get("ts")
                )


schema = strawberry.Schema(
    query=Query,
    subscription=Subscription,
    config=StrawberryConfig(scalar_map=SCALARS),
    extensions=[
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=20),
        lambda: MaxTokensLimiter(max_token_count=4_000),
        lambda: AddValidationRules([CostLimit]),
        ErrorCodes,
    ],
)
