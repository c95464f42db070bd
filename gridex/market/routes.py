"""Thin HTTP layer of the market: epochs, orders, the book, market data, trades, regions."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, status

from gridex.auth.deps import (
    AdminPrincipal,
    AnyPrincipal,
    CurrentPrincipal,
    SessionCheckedCaller,
    StaffPrincipal,
    idempotent,
)
from gridex.auth.service import Principal
from gridex.core.config import REGION_NAME
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gridex.core.idempotency import IdempotencyConflict, IdempotencyInProgress
from gridex.core.pagination import Page, PageDep
from gridex.core.schemas import AwareDatetime, raises
from gridex.ledger.errors import InsufficientFunds
from gridex.market import epoch_trades, orders, service
from gridex.market.errors import (
    ExceedsCapacity,
    GateClosed,
    NoEligibleMeter,
    PriceOutOfBounds,
    SelfTrade,
)
from gridex.market.models import EpochState, OrderStatus, Side
from gridex.market.schemas import (
    CurrentEpochsOut,
    EpochOut,
    EpochTradesOut,
    HistoryOut,
    MarketDataOut,
    MemberSettlementOut,
    OrderBookOut,
    OrderDetailOut,
    OrderIn,
    OrderOut,
    OrderUpdate,
    PublicTradeOut,
    RegionSettingsIn,
    RegionSettingsOut,
    TradeOut,
)
from gridex.market.settlement import positions
from gridex.regions.service import UnknownRegion

market_router = APIRouter(prefix="/market", tags=["market"])

RegionQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, description="Default: your region"),
]
RegionPath = Annotated[str, Path(pattern=f"^{REGION_NAME}$")]


def _region(principal: Principal, region: str | None) -> str:
    resolved = region or principal.user.region
    if not resolved:
        raise ValidationFailed("region is required", details={"field": "region"})
    return resolved


# Order entry first: routes are matched one by one in the order they are declared, so the
# busiest path is tried before the others.
# Valid as they stand at any time: the epoch defaults to the next open one and the region to
# the caller's, so "Try it out" in /docs places a real order.
ORDER_EXAMPLES = {
    "limit_buy": {
        "summary": "Buy 1.5 kWh at up to 0.125 per kWh in the next open epoch",
        "value": {"side": "buy", "type": "limit", "quantity_kwh": 1.5, "limit_price": "0.125000"},
    },
    "market_sell": {
        "summary": "Sell 0.5 kWh at the clearing price (needs a meter that exports)",
        "value": {"side": "sell", "type": "market", "quantity_kwh": 0.5},
    },
    "named": {
        "summary": "A limit sell in a named region, with your own id for it",
        "value": {
            "side": "sell",
            "type": "limit",
            "quantity_kwh": 2,
            "limit_price": "0.110000",
            "region": "community",
            "client_order_id": "my-bot-000123",
        },
    },
}

# What order entry can refuse besides a malformed request (docs/market.md defines each rule).
ENTRY_REFUSALS = (
    GateClosed,
    InsufficientFunds,
    NoEligibleMeter,
    SelfTrade,
    Conflict,
    PriceOutOfBounds,
    ExceedsCapacity,
)


@market_router.post(
    "/orders",
    status_code=status.HTTP_201_CREATED,
    responses=raises(*ENTRY_REFUSALS, UnknownRegion, IdempotencyConflict, IdempotencyInProgress),
)
@idempotent
async def place_order(
    body: Annotated[OrderIn, Body(openapi_examples=ORDER_EXAMPLES)],
    caller: SessionCheckedCaller,
    session: SessionDep,
    rt: RuntimeDep,
) -> OrderOut:
    """Place a buy or sell order; a buy reserves quantity x limit (market: the band's max)."""
    return await orders.place_order(session, rt, caller, body.as_new_order())


@market_router.get("/orders", responses=raises(ValidationFailed))
async def list_orders(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    page: PageDep,
    status: OrderStatus | None = None,
    side: Side | None = None,
    epoch: AwareDatetime | None = None,
) -> Page[OrderOut]:
    """Your orders, newest first, filtered by status, side and epoch."""
    return await service.list_orders(
        session, rt, principal, page, status=status, side=side, epoch=epoch
    )


@market_router.get("/orders/{order_id}", responses=raises(NotFound))
async def get_order(
    order_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> OrderDetailOut:
    """One of your orders with its fills."""
    return await service.get_order(session, principal, order_id)


@market_router.patch("/orders/{order_id}", responses=raises(*ENTRY_REFUSALS, NotFound))
async def modify_order(
    order_id: uuid.UUID,
    body: OrderUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> OrderOut:
    """Change quantity and/or limit while the epoch is open; the order loses time priority."""
    return await orders.modify_order(session, rt, principal, order_id, body.as_change())


@market_router.delete("/orders/{order_id}", responses=raises(GateClosed, Conflict, NotFound))
async def cancel_order(
    order_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> OrderOut:
    """Cancel while the epoch is open; releases the reservation."""
    return await orders.cancel_order(session, rt, principal, order_id)


@market_router.get("/epochs", responses=raises(ValidationFailed))
async def list_epochs(
    principal: AnyPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    page: PageDep,
    region: RegionQuery = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
    state: EpochState | None = None,
) -> Page[EpochOut]:
    """Stored epochs of a region by start (the horizon job creates them ahead of time)."""
    return await service.list_epochs(
        session, rt, _region(principal, region), page, since=from_, until=to, state=state
    )


@market_router.get("/epochs/current", responses=raises(ValidationFailed))
async def current_epochs(
    principal: AnyPrincipal, session: SessionDep, rt: RuntimeDep, region: RegionQuery = None
) -> CurrentEpochsOut:
    """`open`: the next epoch still taking orders; `delivering`: the one in delivery now."""
    return await service.current_epochs(session, rt, _region(principal, region))


@market_router.get("/epochs/{epoch}", responses=raises(ValidationFailed))
async def get_epoch(
    epoch: AwareDatetime,
    principal: AnyPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: RegionQuery = None,
) -> EpochOut:
    """One epoch by its start: times, state, mechanism and, once cleared, its clearing."""
    return await service.get_epoch(session, rt, _region(principal, region), epoch)


@market_router.get("/epochs/{epoch}/trades", responses=raises(NotFound, Conflict, ValidationFailed))
async def get_epoch_trades(
    epoch: AwareDatetime,
    session: SessionDep,
    rt: RuntimeDep,
    region: Annotated[str, Query(min_length=1, max_length=64)],
) -> EpochTradesOut:
    """Public, once cleared: the epoch's trades in the canonical order of its `trades_hash`."""
    return await epoch_trades.epoch_trades(session, rt, region, epoch)


@market_router.post(
    "/epochs/{epoch}/clear", responses=raises(Forbidden, Conflict, ValidationFailed)
)
async def clear_epoch(
    epoch: AwareDatetime,
    principal: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: RegionQuery = None,
) -> EpochOut:
    """Operators: clear now, the same code as the job (only after gate closure; idempotent)."""
    return await service.clear_now(session, rt, principal, _region(principal, region), epoch)


@market_router.post(
    "/epochs/{epoch}/settle", responses=raises(Forbidden, Conflict, ValidationFailed)
)
async def settle_epoch(
    epoch: AwareDatetime,
    principal: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: RegionQuery = None,
) -> EpochOut:
    """Operators: settle now, the same code as the jobs (only once delivered; idempotent)."""
    return await service.settle_now(session, rt, principal, _region(principal, region), epoch)


@market_router.get("/orderbook", responses=raises(ValidationFailed))
async def orderbook(
    principal: AnyPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    region: RegionQuery = None,
    epoch: AwareDatetime | None = None,
) -> OrderBookOut:
    """Resting orders per price level (default: the next open epoch); `own_*` are yours."""
    return await service.orderbook(session, rt, principal, _region(principal, region), epoch)


@market_router.get("/data", responses=raises(ValidationFailed))
async def market_data(
    principal: AnyPrincipal, session: SessionDep, rt: RuntimeDep, region: RegionQuery = None
) -> MarketDataOut:
    """Last clearing price and volume, 24-hour VWAP, high and low, and the next epoch's open
    interest."""
    return await service.market_data(session, rt, _region(principal, region))


@market_router.get("/history", responses=raises(ValidationFailed))
async def history(
    principal: AnyPrincipal,
    session: SessionDep,
    page: PageDep,
    region: RegionQuery = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
) -> Page[HistoryOut]:
    """Cleared epochs with their price and volume, newest first."""
    return await service.history(session, _region(principal, region), page, since=from_, until=to)


@market_router.get("/trades", responses=raises(ValidationFailed))
async def own_trades(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    page: PageDep,
    epoch: AwareDatetime | None = None,
) -> Page[TradeOut]:
    """Your trades, newest first, each from your side: quantity, price, value and your fee."""
    return await service.own_trades(session, rt, principal, page, epoch)


@market_router.get("/settlements", responses=raises(Forbidden))
async def settlements(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    region: RegionQuery = None,
    user_id: uuid.UUID | None = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
) -> Page[MemberSettlementOut]:
    """Your settlement per settled epoch, latest first: energy sold, bought, delivered and
    consumed, proceeds, fee, shortfall charge, feed-in credit, revenue shares, net and the
    ledger entries. Operators and admins: every member's, or `user_id`'s."""
    return await positions.settlements(
        session, principal, page, user_id=user_id, region=region, since=from_, until=to
    )


@market_router.get("/trades/recent")
async def recent_trades(
    principal: AnyPrincipal,
    session: SessionDep,
    region: RegionQuery = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[PublicTradeOut]:
    """The public tape: newest trades without orders or participants."""
    return await service.recent_trades(session, region, limit)


@market_router.get("/regions")
async def list_regions(
    principal: AnyPrincipal, session: SessionDep, rt: RuntimeDep
) -> list[RegionSettingsOut]:
    """Every region of the deployment with the market settings in force there."""
    return await service.list_region_settings(session, rt)


@market_router.get("/regions/{region}", responses=raises(NotFound))
async def get_region(
    region: RegionPath, principal: AnyPrincipal, session: SessionDep, rt: RuntimeDep
) -> RegionSettingsOut:
    """A region's market settings: mechanism, price band, fee and time zone (the defaults it
    uses when none were set)."""
    return await service.get_region_settings(session, rt, region)


@market_router.put("/regions/{region}", responses=raises(Forbidden, ValidationFailed))
async def put_region(
    region: RegionPath,
    body: RegionSettingsIn,
    principal: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> RegionSettingsOut:
    """Set a region's market settings; creates the region when it does not exist (admins only:
    users, meters and orders may name existing regions only)."""
    return await service.put_region_settings(session, rt, principal, region, body)
