"""Wallet balances, history and statements, installations and the trial balance."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, status

from gridex.auth.deps import AdminPrincipal, CurrentPrincipal, StaffPrincipal
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageDep
from gridex.core.schemas import AwareDatetime, raises
from gridex.ledger import installations, service
from gridex.ledger.schemas import (
    InstallationIn,
    InstallationOut,
    StatementOut,
    TransactionOut,
    TrialBalanceOut,
    WalletOut,
)

wallet_router = APIRouter(prefix="/wallet", tags=["wallet"])
installations_router = APIRouter(prefix="/installations", tags=["installations"])
ledger_admin_router = APIRouter(prefix="/admin/ledger", tags=["admin"])


@wallet_router.get("")
async def get_wallet(principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep) -> WalletOut:
    """Balances; `chain_address` and `energy_tokens_kwh` are null until the chain mirror has
    opened your custodial wallet (or when the chain is off)."""
    return await service.wallet(session, rt, principal.user)


@wallet_router.get("/transactions")
async def list_transactions(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    type: Annotated[str | None, Query(max_length=32)] = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
) -> Page[TransactionOut]:
    """Ledger entries touching you, newest first; `amount` is the net change of your wallet."""
    return await service.transactions(
        session, principal.user.id, page, entry_type=type, since=from_, until=to
    )


@wallet_router.get("/statements", responses=raises(ValidationFailed))
async def list_statements(
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    date_: Annotated[date | None, Query(alias="date")] = None,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
) -> list[StatementOut]:
    """Daily statements (UTC days): one `date`, or every day `from` .. `to` inclusive (default:
    today). Each day's closing is the next day's opening."""
    if date_ is not None and (from_ is not None or to is not None):
        raise ValidationFailed("give either `date` or `from`/`to`")
    today = rt.clock.now().date()
    first = date_ or from_ or to or today
    last = date_ or to or max(first, today)
    return await service.statements(session, rt, principal.user.id, first, last)


@installations_router.get("")
async def list_installations(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    meter_id: uuid.UUID | None = None,
) -> Page[InstallationOut]:
    """Staff see every installation; others the ones they hold a share of."""
    return await installations.list_installations(session, principal, page, meter_id)


@installations_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=raises(Forbidden, Conflict, ValidationFailed),
)
async def create_installation(
    body: InstallationIn, staff: StaffPrincipal, session: SessionDep, rt: RuntimeDep
) -> InstallationOut:
    """Revenue shares of a meter; shares and `platform_percent` must sum to 100."""
    return await installations.create_installation(session, rt, staff, body)


@installations_router.get("/{installation_id}", responses=raises(NotFound))
async def get_installation(
    installation_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> InstallationOut:
    """One installation with its revenue shares (staff, or a holder of a share)."""
    return await installations.get_installation(session, principal, installation_id)


@installations_router.put(
    "/{installation_id}", responses=raises(Forbidden, NotFound, Conflict, ValidationFailed)
)
async def update_installation(
    installation_id: uuid.UUID,
    body: InstallationIn,
    staff: StaffPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> InstallationOut:
    """Staff: replace an installation's shares; they and `platform_percent` must sum to 100."""
    return await installations.update_installation(session, rt, staff, installation_id, body)


@ledger_admin_router.get("/trial-balance", responses=raises(Forbidden))
async def trial_balance(_: AdminPrincipal, session: SessionDep, rt: RuntimeDep) -> TrialBalanceOut:
    """Every account's balance; `total` is always "0.000000"."""
    return await service.trial_balance(session, rt)
