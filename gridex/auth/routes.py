from __future__ import annotations

from fastapi import APIRouter, Request, status

from gridex.auth import service
from gridex.auth.deps import AnyPrincipal, CurrentPrincipal
from gridex.auth.schemas import (
    EmailIn,
    LoginIn,
    PasswordChangeIn,
    PasswordResetIn,
    RefreshIn,
    RegisterIn,
    SetPasswordIn,
    TokenPairOut,
    UserOut,
    ValidateOut,
    VerifyEmailIn,
    WalletChallengeIn,
    WalletChallengeOut,
    WalletVerifyIn,
)
from gridex.auth.service import TokenPair
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import (
    AccountLocked,
    AccountSuspended,
    AuthenticationRequired,
    Conflict,
    EmailNotVerified,
    Forbidden,
    InvalidCredentials,
    InvalidSignature,
    InvalidToken,
    RateLimitExceeded,
    ValidationFailed,
)
from gridex.core.schemas import OutputModel, raises
from gridex.regions.service import UnknownRegion

router = APIRouter(prefix="/auth", tags=["auth"])


class Accepted(OutputModel):
    status: str = "accepted"
    message: str


class Done(OutputModel):
    status: str = "ok"


def _pair(pair: TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        user=UserOut.model_validate(pair.user),
    )


def _client(request: Request) -> tuple[str | None, str | None]:
    host = request.client.host if request.client else None
    return host, request.headers.get("user-agent")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=raises(Conflict, UnknownRegion, Forbidden, ValidationFailed),
)
async def register(body: RegisterIn, session: SessionDep, rt: RuntimeDep) -> UserOut:
    """Create an account; a 6-digit code is emailed to verify the address."""
    return UserOut.model_validate(await service.register(session, rt, body))


@router.post("/verify-email", responses=raises(ValidationFailed, RateLimitExceeded))
async def verify_email(body: VerifyEmailIn, session: SessionDep, rt: RuntimeDep) -> UserOut:
    """Confirm the address with the emailed 6-digit code (10 minutes, 5 attempts); a wrong or
    spent code is 422 `VALIDATION_ERROR` with `details.otp`."""
    return UserOut.model_validate(await service.verify_email(session, rt, body.email, body.otp))


@router.post(
    "/resend-otp", status_code=status.HTTP_202_ACCEPTED, responses=raises(RateLimitExceeded)
)
async def resend_otp(body: EmailIn, session: SessionDep, rt: RuntimeDep) -> Accepted:
    """Send a new verification code; always 202, whether or not the account exists."""
    await service.resend_otp(session, rt, body.email)
    return Accepted(message="If the account exists and is unverified, a new code was sent")


@router.post(
    "/login",
    responses=raises(
        InvalidCredentials, AccountSuspended, EmailNotVerified, AccountLocked, RateLimitExceeded
    ),
)
async def login(
    body: LoginIn, request: Request, session: SessionDep, rt: RuntimeDep
) -> TokenPairOut:
    """Sign in with `username` or `email` and the password: an access token (Bearer) and a
    refresh token. Five failures lock the account for 30 minutes."""
    ip, agent = _client(request)
    pair = await service.login(session, rt, body.identifier, body.password, ip=ip, user_agent=agent)
    return _pair(pair)


@router.post("/refresh", responses=raises(InvalidToken))
async def refresh(body: RefreshIn, session: SessionDep, rt: RuntimeDep) -> TokenPairOut:
    """A new token pair for a refresh token, which is spent; presenting a spent one again
    revokes the whole session (401 `INVALID_TOKEN`)."""
    return _pair(await service.refresh(session, rt, body.refresh_token))


@router.get("/validate")
async def validate(principal: AnyPrincipal) -> ValidateOut:
    """200 with the credential's claims while it is valid."""
    if principal.api_key is not None:
        return ValidateOut(
            kind="api_key",
            user_id=principal.user.id,
            username=principal.user.username,
            role=principal.role,
            scopes=sorted(principal.api_key.scopes),
            expires_at=principal.api_key.expires_at,
        )
    assert principal.claims is not None
    return ValidateOut(
        kind="access_token",
        user_id=principal.user.id,
        username=principal.user.username,
        role=principal.role,
        session_id=principal.session_id,
        expires_at=principal.claims.expires_at,
    )


@router.post("/set-password", responses=raises(ValidationFailed, RateLimitExceeded))
async def set_password(body: SetPasswordIn, session: SessionDep, rt: RuntimeDep) -> UserOut:
    """An invited user sets a first password with the emailed code."""
    user = await service.set_password(session, rt, body.email, body.otp, body.password)
    return UserOut.model_validate(user)


@router.post("/logout")
async def logout(principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep) -> Done:
    """End this session: its access and refresh tokens stop working."""
    await service.logout(session, rt, principal)
    return Done()


@router.post("/logout-all")
async def logout_all(principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep) -> Done:
    """End every session of the account."""
    await service.logout_all(session, rt, principal)
    return Done()


@router.post(
    "/password/change",
    responses=raises(AuthenticationRequired, InvalidToken, InvalidCredentials, ValidationFailed),
)
async def change_password(
    body: PasswordChangeIn, principal: CurrentPrincipal, session: SessionDep, rt: RuntimeDep
) -> Done:
    """Change the password (the current one is required); other sessions are revoked."""
    await service.change_password(session, rt, principal, body.current_password, body.new_password)
    return Done()


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    responses=raises(RateLimitExceeded),
)
async def forgot_password(body: EmailIn, session: SessionDep, rt: RuntimeDep) -> Accepted:
    """Email a reset code; always 202, so that nobody learns which addresses have accounts."""
    await service.forgot_password(session, rt, body.email)
    return Accepted(message="If the account exists, a reset code was sent")


@router.post("/password/reset", responses=raises(ValidationFailed, RateLimitExceeded))
async def reset_password(body: PasswordResetIn, session: SessionDep, rt: RuntimeDep) -> Done:
    """Set a new password with the emailed reset code; every session is revoked."""
    await service.reset_password(session, rt, body.email, body.otp, body.new_password)
    return Done()


@router.post("/wallet/challenge", responses=raises(ValidationFailed))
async def wallet_challenge(
    body: WalletChallengeIn, session: SessionDep, rt: RuntimeDep
) -> WalletChallengeOut:
    """A one-use Sign-In-With-Solana message to sign with the wallet (valid 5 minutes)."""
    return WalletChallengeOut.model_validate(
        await service.wallet_challenge(session, rt, body.wallet_address)
    )


@router.post(
    "/wallet/verify",
    responses=raises(InvalidSignature, InvalidCredentials, AccountSuspended, ValidationFailed),
)
async def wallet_verify(
    body: WalletVerifyIn, request: Request, session: SessionDep, rt: RuntimeDep
) -> TokenPairOut:
    """Sign in with a wallet: the signed challenge message (base58 signature); the first
    sign-in creates a wallet-only account."""
    ip, agent = _client(request)
    pair = await service.wallet_sign_in(
        session, rt, body.wallet_address, body.signature, body.message, ip=ip, user_agent=agent
    )
    return _pair(pair)
