from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from gridex.audit.service import audit_query
from gridex.auth import service as auth_service
from gridex.auth.deps import AdminPrincipal, CurrentPrincipal, OwnsMeterDep, StaffPrincipal
from gridex.auth.models import Role, UserStatus
from gridex.auth.schemas import ApiKeyCreatedOut, ApiKeyIn, ApiKeyOut, UserOut, WalletVerifyIn
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import Conflict, Forbidden, InvalidSignature, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageDep, paginate
from gridex.core.schemas import raises
from gridex.regions.service import UnknownRegion
from gridex.users import service
from gridex.users.repository import user_search_query
from gridex.users.schemas import (
    AdminUserUpdate,
    AuditEntryOut,
    InviteIn,
    Preferences,
    ProfileUpdate,
    RoleIn,
    SuspendIn,
)

me_router = APIRouter(prefix="/me", tags=["me"])
users_router = APIRouter(prefix="/users", tags=["users"])


# --- /me ----------------------------------------------------------------------------------


@me_router.get("")
async def get_me(principal: CurrentPrincipal) -> UserOut:
    """Your own account."""
    return UserOut.model_validate(principal.user)


@me_router.patch("", responses=raises(Forbidden, UnknownRegion))
async def patch_me(
    body: ProfileUpdate, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> UserOut:
    """Update your profile; role, status and email are not writable here."""
    return UserOut.model_validate(await service.update_profile(session, rt, principal, body))


@me_router.get("/preferences")
async def get_preferences(principal: CurrentPrincipal) -> Preferences:
    """Your notification channels per event type, locale and time zone."""
    return service.get_preferences(principal.user)


@me_router.put("/preferences")
async def put_preferences(
    body: Preferences, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> Preferences:
    """Replace your notification preferences, locale and time zone."""
    return await service.put_preferences(session, rt, principal, body)


@me_router.post("/wallet", responses=raises(InvalidSignature, Conflict, ValidationFailed))
async def link_wallet(
    body: WalletVerifyIn, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> UserOut:
    """Link an external wallet by signing a challenge from POST /auth/wallet/challenge."""
    user = await auth_service.link_wallet(
        session, rt, principal, body.wallet_address, body.signature, body.message
    )
    return UserOut.model_validate(user)


@me_router.delete("/wallet", responses=raises(NotFound, Conflict))
async def unlink_wallet(
    principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> UserOut:
    """Unlink your wallet (409 `CONFLICT` when it is the account's only sign-in method)."""
    return UserOut.model_validate(await auth_service.unlink_wallet(session, rt, principal))


@me_router.get("/activity")
async def my_activity(
    principal: CurrentPrincipal, session: SessionDep, page: PageDep
) -> Page[AuditEntryOut]:
    """Your activity history (the audit entries that involve you), newest first."""
    rows, total = await paginate(session, audit_query(involving_user=principal.user.id), page)
    return Page.build([AuditEntryOut.model_validate(r) for r in rows], total, page)


@me_router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    responses=raises(NotFound, ValidationFailed),
)
async def create_api_key(
    body: ApiKeyIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
    owns_meter: OwnsMeterDep,
) -> ApiKeyCreatedOut:
    """Create an API key; the secret in `key` is shown only in this response."""
    api_key, secret = await auth_service.create_api_key(
        session, rt, principal, body, owns_meter=owns_meter
    )
    return ApiKeyCreatedOut.model_validate(
        {**ApiKeyOut.model_validate(api_key).model_dump(), "key": secret}
    )


@me_router.get("/api-keys")
async def list_api_keys(principal: CurrentPrincipal, session: SessionDep) -> list[ApiKeyOut]:
    """Your API keys without their secrets."""
    return [
        ApiKeyOut.model_validate(k) for k in await auth_service.list_api_keys(session, principal)
    ]


@me_router.delete(
    "/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=raises(NotFound)
)
async def revoke_api_key(
    key_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> None:
    """Revoke one of your API keys; it stops working at once."""
    await auth_service.revoke_api_key(session, rt, principal, key_id)


# --- /users (admin; operators read) -------------------------------------------------------


@users_router.get("", responses=raises(Forbidden))
async def list_users(
    _: StaffPrincipal,
    session: SessionDep,
    page: PageDep,
    search: Annotated[str | None, Query(max_length=100)] = None,
    role: Role | None = None,
    region: str | None = None,
    status: UserStatus | None = None,
    department: str | None = None,
) -> Page[UserOut]:
    """Staff: accounts filtered by search text, role, region, status and department."""
    query = user_search_query(
        search=search, role=role, region=region, status=status, department=department
    )
    rows, total = await paginate(session, query, page)
    return Page.build([UserOut.model_validate(r) for r in rows], total, page)


@users_router.get(
    "/export.csv",
    response_class=Response,
    responses={
        200: {
            "description": "The accounts as CSV, one row per account",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **raises(Forbidden),
    },
)
async def export_users(
    _: StaffPrincipal,
    session: SessionDep,
    search: Annotated[str | None, Query(max_length=100)] = None,
    role: Role | None = None,
    region: str | None = None,
    status: UserStatus | None = None,
    department: str | None = None,
) -> Response:
    """Staff: the same filtered accounts as CSV (a download)."""
    query = user_search_query(
        search=search, role=role, region=region, status=status, department=department
    )
    return Response(
        await service.export_csv(session, query),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="gridex-users.csv"'},
    )


@users_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=raises(Forbidden, Conflict, UnknownRegion),
)
async def invite_user(
    body: InviteIn, admin: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> UserOut:
    """Invite a person: the account waits for them to set a password with the emailed code."""
    return UserOut.model_validate(await service.invite_user(session, rt, admin, body))


@users_router.get("/{user_id}", responses=raises(Forbidden, NotFound))
async def get_user(user_id: uuid.UUID, _: StaffPrincipal, session: SessionDep) -> UserOut:
    """Staff: one account."""
    return UserOut.model_validate(await service.get_user(session, user_id))


@users_router.patch("/{user_id}", responses=raises(Forbidden, NotFound, Conflict, UnknownRegion))
async def update_user(
    user_id: uuid.UUID,
    body: AdminUserUpdate,
    admin: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> UserOut:
    """Admins: change an account's profile fields, region or department."""
    return UserOut.model_validate(await service.admin_update(session, rt, admin, user_id, body))


@users_router.put("/{user_id}/role", responses=raises(Forbidden, NotFound, Conflict))
async def set_role(
    user_id: uuid.UUID, body: RoleIn, admin: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> UserOut:
    """Admins: change an account's role; its sessions end so that the new role applies."""
    return UserOut.model_validate(await service.set_role(session, rt, admin, user_id, body.role))


@users_router.post("/{user_id}/suspend", responses=raises(Forbidden, NotFound, Conflict))
async def suspend_user(
    user_id: uuid.UUID,
    body: SuspendIn,
    admin: AdminPrincipal,
    session: SessionDep,
    rt: RuntimeDep,
) -> UserOut:
    """Admins: suspend an account with a reason; its sessions end."""
    return UserOut.model_validate(await service.suspend(session, rt, admin, user_id, body.reason))


@users_router.post("/{user_id}/activate", responses=raises(Forbidden, NotFound, Conflict))
async def activate_user(
    user_id: uuid.UUID, admin: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> UserOut:
    """Admins: reactivate a suspended account."""
    return UserOut.model_validate(await service.activate(session, rt, admin, user_id))


@users_router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=raises(Forbidden, NotFound, Conflict),
)
async def delete_user(
    user_id: uuid.UUID, admin: AdminPrincipal, session: SessionDep, rt: RuntimeDep
) -> None:
    """Soft delete: personal data is anonymised, the ledger history stays."""
    await service.soft_delete(session, rt, admin, user_id)


@users_router.get("/{user_id}/activity", responses=raises(Forbidden, NotFound))
async def user_activity(
    user_id: uuid.UUID, _: StaffPrincipal, session: SessionDep, page: PageDep
) -> Page[AuditEntryOut]:
    """Staff: one account's activity history, newest first."""
    await service.get_user(session, user_id)
    rows, total = await paginate(session, audit_query(involving_user=user_id), page)
    return Page.build([AuditEntryOut.model_validate(r) for r in rows], total, page)
