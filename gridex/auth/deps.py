"""Authorisation as dependencies: who is calling, and whether their role or scopes allow it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth import scopes, service
from gridex.auth.models import Role
from gridex.auth.service import Principal, TokenCaller
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import AuthenticationRequired, Forbidden
from gridex.core.idempotency import idempotent_for
from gridex.core.middleware import DECODED_TOKEN_STATE, route_template
from gridex.core.runtime import Runtime
from gridex.core.security import AccessClaims

bearer_scheme = HTTPBearer(auto_error=False, description="Access token from /auth/login")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def _verified(request: Request, token: str) -> AccessClaims | None:
    """The token's claims if this request's rate limiter already verified them."""
    decoded = getattr(request.state, DECODED_TOKEN_STATE, None)
    return decoded[1] if decoded is not None and decoded[0] == token else None


async def _principal(
    request: Request,
    session: SessionDep,
    rt: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    if bearer is not None:
        principal = await service.authenticate_bearer(
            session, rt, bearer.credentials, verified=_verified(request, bearer.credentials)
        )
    elif api_key:
        principal = await service.authenticate_api_key(session, rt, api_key)
        _check_key_scopes(request, principal)
    else:
        raise AuthenticationRequired(headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = principal
    return principal


def _check_key_scopes(request: Request, principal: Principal) -> None:
    """An API key reaches only the routes its scopes list in ``auth.scopes`` (the one table)."""
    key = principal.api_key
    assert key is not None
    method, path = request.method, route_template(request.scope)
    if scopes.key_may_call(key.scopes, method, path):
        return
    accepted = sorted(scopes.scopes_for(method, path))
    if not accepted:
        raise Forbidden(
            "This endpoint needs a user's access token, not an API key",
            details={"accepted_scopes": []},
        )
    raise Forbidden(
        f"The API key lacks a scope for this endpoint: one of {accepted}",
        details={
            "required": accepted[0] if len(accepted) == 1 else accepted,
            "accepted_scopes": accepted,
        },
    )


async def principal_of(request: Request, session: AsyncSession, rt: Runtime) -> Principal:
    """The request's principal: the one a dependency already resolved, else authenticated from
    its headers now (for code that needs it only sometimes, such as an ``Idempotency-Key``)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = await _principal(
            request, session, rt, await bearer_scheme(request), await api_key_scheme(request)
        )
    return principal


async def _idempotency_scope(request: Request, session: AsyncSession, rt: Runtime) -> str:
    principal = await principal_of(request, session, rt)
    if principal.api_key is not None:
        return f"api_key:{principal.api_key.id}"
    return f"user:{principal.user.id}"


# The runtime extension under which the app puts the meters domain's ownership check.
OWNS_METER = "auth.owns_meter"


async def _owns_meter(rt: RuntimeDep) -> service.OwnsMeter:
    check = rt.extensions[OWNS_METER]
    return cast(service.OwnsMeter, check)


OwnsMeterDep = Annotated[service.OwnsMeter, Depends(_owns_meter)]

# Make a POST route honour ``Idempotency-Key``, keys kept apart per user or API key.
idempotent = idempotent_for(_idempotency_scope)


async def _session_checked_caller(
    request: Request,
    session: SessionDep,
    rt: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal | TokenCaller:
    if bearer is None:
        return await _principal(request, session, rt, bearer, api_key)
    token = bearer.credentials
    return TokenCaller(token, service.verified_claims(rt, token, _verified(request, token)))


# The caller: a user's access token, or an API key whose scopes reach this route in the table
# of ``gridex.auth.scopes`` (every other route refuses keys with 403). Which routes take keys is
# decided there alone, not by which of these names a route uses.
AnyPrincipal = Annotated[Principal, Depends(_principal)]
CurrentPrincipal = AnyPrincipal
# The same, for a route whose own statement checks the token's session and user (order entry):
# a bearer token's verified claims, not looked up (``TokenCaller``); an API key is checked
# against the table as for ``AnyPrincipal``.
SessionCheckedCaller = Annotated[Principal | TokenCaller, Depends(_session_checked_caller)]


def require_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through signed-in users of the given roles only."""
    allowed = frozenset(roles)

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(
                "Your role cannot do this", details={"required": sorted(r.value for r in allowed)}
            )
        return principal

    return dependency


AdminPrincipal = Annotated[Principal, Depends(require_role(Role.admin))]
StaffPrincipal = Annotated[Principal, Depends(require_role(Role.admin, Role.operator))]
