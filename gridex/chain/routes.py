"""Thin HTTP layer of the chain: network, transactions, balances, reconciliation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gridex.auth.deps import AdminPrincipal, CurrentPrincipal
from gridex.chain import views
from gridex.chain.models import OutboxStatus, TxKind
from gridex.chain.node import ChainDisabled
from gridex.chain.schemas import (
    BalanceOut,
    ChainTransactionDetailOut,
    ChainTransactionOut,
    NetworkOut,
    ReconciliationOut,
)
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Forbidden, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageDep
from gridex.core.schemas import raises

chain_router = APIRouter(prefix="/blockchain", tags=["blockchain"])
chain_admin_router = APIRouter(prefix="/admin/chain", tags=["admin"])

Address = Annotated[str, Path(min_length=32, max_length=44)]


@chain_router.get("/network")
async def get_network(principal: CurrentPrincipal, rt: RuntimeDep) -> NetworkOut:
    """The backend and cluster, its slot and health, the mints and the platform address."""
    return await views.network(rt)


@chain_router.get("/transactions", responses=raises(ChainDisabled))
async def list_chain_transactions(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    page: PageDep,
    kind: TxKind | None = None,
    status: Annotated[OutboxStatus | None, Query()] = None,
) -> Page[ChainTransactionOut]:
    """Chain transactions that concern you (admins: all), newest first."""
    return await views.transactions(
        session,
        rt,
        principal,
        page,
        kind=kind.value if kind else None,
        status=status.value if status else None,
    )


@chain_router.get("/transactions/{signature}", responses=raises(NotFound, ChainDisabled))
async def get_transaction(
    signature: Annotated[str, Path(min_length=64, max_length=100)],
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> ChainTransactionDetailOut:
    """One transaction with its memo and decoded instructions."""
    return await views.transaction(session, rt, principal, signature)


@chain_router.get("/accounts/{address}", responses=raises(ValidationFailed, ChainDisabled))
async def get_account(address: Address, principal: CurrentPrincipal, rt: RuntimeDep) -> BalanceOut:
    """SOL and token balances of an address (chain data is public)."""
    return await views.balance(rt, address)


@chain_router.get("/balance/{address}", responses=raises(ValidationFailed, ChainDisabled))
async def get_balance(address: Address, principal: CurrentPrincipal, rt: RuntimeDep) -> BalanceOut:
    """The same balances as `GET /blockchain/accounts/{address}`, under the name older
    clients use."""
    return await views.balance(rt, address)


@chain_admin_router.get("/reconciliation", responses=raises(Forbidden, ChainDisabled))
async def get_reconciliation(
    principal: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> ReconciliationOut:
    """Ledger (a user's `available + reserved`, never below zero) against chain, per account."""
    return await views.reconciliation(session, rt)
