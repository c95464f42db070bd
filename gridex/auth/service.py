"""Sign-in and sessions: registration, OTPs, passwords, lockout, tokens, wallets and API keys."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from limits import RateLimitItemPerMinute
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record, record_account_event
from gridex.auth import repository
from gridex.auth.models import (
    SELF_SERVICE_ROLES,
    ApiKey,
    AuthSession,
    OtpCode,
    OtpPurpose,
    RefreshToken,
    Role,
    User,
    UserStatus,
    WalletNonce,
)
from gridex.auth.repository import get_user_by_email, get_user_by_login
from gridex.auth.schemas import ApiKeyIn, RegisterIn
from gridex.core.clock import utc_iso
from gridex.core.errors import (
    AccountLocked,
    AccountSuspended,
    Conflict,
    EmailNotVerified,
    Forbidden,
    InvalidCredentials,
    InvalidSignature,
    InvalidToken,
    NotFound,
    RateLimitExceeded,
    ValidationFailed,
)
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.security import (
    AccessClaims,
    TokenError,
    constant_time_equal,
    decode_access_token,
    decode_wallet_address,
    encode_access_token,
    keyed_hash,
    new_otp,
    new_secret,
    sha256_hex,
    verify_ed25519,
)
from gridex.mail.service import queue_email
from gridex.regions.service import require_region

INVITE_OTP_HOURS = 72
API_KEY_PREFIX = "gdx"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user through an access token, or a user's API key with its scopes."""

    user: User
    session_id: uuid.UUID | None = None
    api_key: ApiKey | None = None
    claims: AccessClaims | None = None

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def scopes(self) -> frozenset[str] | None:
        """None for a user's own token (the role decides); the key's scopes for an API key."""
        return frozenset(self.api_key.scopes) if self.api_key is not None else None

    @property
    def actor_type(self) -> str:
        return "api_key" if self.api_key is not None else "user"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


# --- passwords -------------------------------------------------------------------------------


def check_password_policy(password: str, *, username: str | None, email: str | None) -> None:
    """10+ characters, more than one character class, not the username or the email."""
    problems = []
    if len(password) < 10:
        problems.append("at least 10 characters")
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < 2:
        problems.append("characters of at least two kinds (lower, upper, digit, symbol)")
    lowered = password.lower()
    if (username and lowered == username.lower()) or (email and lowered == email.lower()):
        problems.append("different from the username and email")
    if problems:
        raise ValidationFailed(
            "The password does not meet the policy", details={"password": problems}
        )


# --- OTP codes -------------------------------------------------------------------------------


def _otp_hash(rt: Runtime, user_id: uuid.UUID, purpose: OtpPurpose, code: str) -> str:
    return keyed_hash(rt.settings.secret_key, "otp", str(user_id), purpose.value, code)


async def _issue_otp(
    session: AsyncSession, rt: Runtime, user: User, purpose: OtpPurpose, *, minutes: float
) -> str:
    """A new code replaces any earlier unused one of the same purpose."""
    now = rt.clock.now()
    await session.execute(
        update(OtpCode)
        .where(
            OtpCode.user_id == user.id,
            OtpCode.purpose == purpose,
            OtpCode.consumed_at.is_(None),
        )
        .values(consumed_at=now)
    )
    code = new_otp()
    session.add(
        OtpCode(
            user_id=user.id,
            purpose=purpose,
            code_hash=_otp_hash(rt, user.id, purpose, code),
            expires_at=now + timedelta(minutes=minutes),
            created_at=now,
        )
    )
    return code


async def _consume_otp(
    session: AsyncSession, rt: Runtime, user: User | None, purpose: OtpPurpose, code: str
) -> None:
    """Check a code; a wrong one costs an attempt, and a code dies after the allowed attempts."""
    invalid = ValidationFailed("The code is invalid or has expired", details={"otp": "invalid"})
    if user is None:
        raise invalid
    now = rt.clock.now()
    otp = await session.scalar(
        select(OtpCode)
        .where(
            OtpCode.user_id == user.id,
            OtpCode.purpose == purpose,
            OtpCode.consumed_at.is_(None),
        )
        .order_by(OtpCode.created_at.desc())
        .limit(1)
        .with_for_update()
    )
    if otp is None or otp.expires_at <= now:
        raise invalid
    max_attempts = rt.settings.otp_max_attempts
    if otp.attempts >= max_attempts:
        raise _otp_exhausted()
    if not constant_time_equal(otp.code_hash, _otp_hash(rt, user.id, purpose, code)):
        spent = await repository.spend_otp_attempt(
            session, otp.id, max_attempts=max_attempts, now=now
        )
        if spent is None:
            raise invalid
        raise ValidationFailed(
            "The code is invalid or has expired",
            details={"otp": "invalid", "attempts_left": max(max_attempts - spent, 0)},
            persist=True,
        )
    if not await repository.consume_otp(session, otp.id, max_attempts=max_attempts, now=now):
        raise invalid  # used up by a parallel request meanwhile


def _otp_exhausted() -> ValidationFailed:
    return ValidationFailed(
        "Too many attempts for this code; request a new one", details={"otp": "exhausted"}
    )


def _send_otp_email(
    session: AsyncSession, rt: Runtime, user: User, purpose: OtpPurpose, code: str
) -> None:
    assert user.email is not None
    subjects = {
        OtpPurpose.verify_email: "Your Gridex verification code",
        OtpPurpose.reset_password: "Your Gridex password reset code",
        OtpPurpose.set_password: "You are invited to Gridex",
    }
    minutes = (
        INVITE_OTP_HOURS * 60 if purpose is OtpPurpose.set_password else rt.settings.otp_minutes
    )
    body = (
        f"Hello {user.username},\n\nYour code is {code}. It expires in {minutes} minutes.\n\n"
        "If you did not ask for it, ignore this email.\n"
    )
    queue_email(
        session,
        rt.settings,
        rt.clock,
        to=user.email,
        subject=subjects[purpose],
        body=body,
        kind=purpose.value,
    )


async def _rate_limit_account(rt: Runtime, action: str, account: str) -> None:
    """The stricter auth limit also applies per account, whichever IPs the attempts come from."""
    if not rt.limiter.enabled:
        return
    state = await rt.limiter.hit(rt.limiter.auth, "account", action, account.lower())
    if not state.allowed:
        raise RateLimitExceeded(
            "Too many attempts for this account; try again later",
            headers={"Retry-After": str(state.reset_after)},
        )


# --- registration and email verification -----------------------------------------------------


async def register(session: AsyncSession, rt: Runtime, data: RegisterIn) -> User:
    """Create a self-service account (prosumer, consumer or investor) and email a code."""
    if data.role not in SELF_SERVICE_ROLES:
        record(
            session,
            at=rt.clock.now(),
            action="auth.register",
            actor_id=None,
            outcome="failure",
            details={"reason": "role_not_allowed", "role": data.role.value},
        )
        raise Forbidden(
            "Operator and admin accounts are created by an admin",
            details={"role": data.role.value},
            persist=True,
        )
    username, email = data.username.lower(), str(data.email).lower()
    check_password_policy(data.password, username=username, email=email)
    # A username is a public handle, so its clash is said; an email is not (see below).
    await ensure_unique(session, username=username, email=None)
    if data.region is not None:
        await require_region(session, data.region)
    now = rt.clock.now()
    owner = await get_user_by_email(session, email)
    if owner is not None:
        return _register_taken_email(session, rt, data, owner)
    user = _account_of(data, rt.hasher.hash(data.password), now)
    session.add(user)
    await flush_unique(session)
    code = await _issue_otp(
        session, rt, user, OtpPurpose.verify_email, minutes=rt.settings.otp_minutes
    )
    _send_otp_email(session, rt, user, OtpPurpose.verify_email, code)
    record_account_event(
        session,
        at=now,
        action="auth.register",
        user_id=user.id,
        details={"role": user.role.value},
    )
    return user


def _register_taken_email(
    session: AsyncSession, rt: Runtime, data: RegisterIn, owner: User
) -> User:
    """Registration with an email that has an account answers like a new one, so that nobody
    learns which addresses have accounts: the same 201 with a user that is never stored, and
    comparable work (the password is hashed). The address's owner is told by email instead."""
    now = rt.clock.now()
    password_hash = rt.hasher.hash(data.password)
    assert owner.email is not None
    queue_email(
        session,
        rt.settings,
        rt.clock,
        to=owner.email,
        subject="Someone tried to register with your address",
        body=(
            f"Hello {owner.username},\n\nSomeone tried to create a Gridex account with this "
            "email address, which already has one. If it was you, sign in, or reset your "
            "password if you forgot it. If not, you can ignore this email.\n"
        ),
        kind="register_attempt",
    )
    record_account_event(
        session,
        at=now,
        action="auth.register",
        user_id=owner.id,
        actor="nobody",
        outcome="failure",
        details={"reason": "email_taken"},
    )
    return _account_of(data, password_hash, now)


def _account_of(data: RegisterIn, password_hash: str, now: datetime) -> User:
    """The account a registration asks for (added to the session by the caller, or not)."""
    return User(
        id=uuid.uuid4(),
        username=data.username.lower(),
        email=str(data.email).lower(),
        password_hash=password_hash,
        role=data.role,
        status=UserStatus.active,
        first_name=data.first_name,
        last_name=data.last_name,
        department=data.department,
        region=data.region,
        department_metadata=data.department_metadata or {},
        profile_metadata={},
        preferences={},
        failed_login_count=0,
        created_at=now,
        updated_at=now,
    )


async def ensure_unique(
    session: AsyncSession,
    *,
    username: str | None,
    email: str | None,
    exclude: uuid.UUID | None = None,
) -> None:
    clashes = []
    if username is not None:
        other = await session.scalar(select(User.id).where(User.username == username))
        if other is not None and other != exclude:
            clashes.append("username")
    if email is not None:
        other = await session.scalar(select(User.id).where(User.email == email))
        if other is not None and other != exclude:
            clashes.append("email")
    if clashes:
        raise Conflict(
            f"The {' and '.join(clashes)} {'is' if len(clashes) == 1 else 'are'} already taken",
            details={"fields": clashes},
        )


async def flush_unique(session: AsyncSession) -> None:
    """Flush, turning a unique-constraint race into the same 409 the pre-check gives."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("The username, email or wallet is already taken") from exc


async def verify_email(session: AsyncSession, rt: Runtime, email: str, otp: str) -> User:
    await _rate_limit_account(rt, "verify", email)
    user = await get_user_by_email(session, email.lower())
    await _consume_otp(session, rt, user, OtpPurpose.verify_email, otp)
    assert user is not None
    user.email_verified_at = rt.clock.now()
    record_account_event(
        session,
        at=rt.clock.now(),
        action="auth.email_verified",
        user_id=user.id,
    )
    return user


async def resend_otp(session: AsyncSession, rt: Runtime, email: str) -> None:
    """Send a new verification code when the account exists and is unverified; silent otherwise."""
    await _rate_limit_account(rt, "resend", email)
    user = await get_user_by_email(session, email.lower())
    if user is None or user.email_verified or user.status is not UserStatus.active:
        _record_unknown_address(session, rt, "auth.otp_resent")
        return
    await _email_code(session, rt, user, OtpPurpose.verify_email, action="auth.otp_resent")


# --- sessions and tokens ---------------------------------------------------------------------


async def _start_session(
    session: AsyncSession,
    rt: Runtime,
    user: User,
    *,
    method: str,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair:
    now = rt.clock.now()
    auth_session = AuthSession(
        user_id=user.id,
        method=method,
        ip=ip,
        user_agent=(user_agent or "")[:300] or None,
        created_at=now,
        expires_at=now + timedelta(days=rt.settings.refresh_token_days),
    )
    session.add(auth_session)
    await session.flush()
    user.last_login_at = now
    return _issue_tokens(session, rt, user, auth_session)


def _issue_tokens(
    session: AsyncSession, rt: Runtime, user: User, auth_session: AuthSession
) -> TokenPair:
    now = rt.clock.now()
    ttl = timedelta(minutes=rt.settings.access_token_minutes)
    claims = AccessClaims(
        user_id=user.id,
        session_id=auth_session.id,
        role=user.role.value,
        jti=uuid.uuid4().hex,
        issued_at=now,
        expires_at=now + ttl,
    )
    refresh = new_secret()
    session.add(
        RefreshToken(session_id=auth_session.id, token_hash=sha256_hex(refresh), created_at=now)
    )
    return TokenPair(
        access_token=encode_access_token(claims, rt.settings.secret_key),
        refresh_token=refresh,
        expires_in=int(ttl.total_seconds()),
        user=user,
    )


async def login(
    session: AsyncSession,
    rt: Runtime,
    identifier: str,
    password: str,
    *,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair:
    """Password sign-in by username or email, with lockout after repeated failures.

    Every refusal before the password check is audited and persisted (``persist=True``), so a
    failed attempt counts even though the request fails.
    """
    user = await get_user_by_login(session, identifier)
    # One account, one bucket: its username and its email are the same account.
    await _rate_limit_account(rt, "login", f"user:{user.id}" if user else identifier)
    now = rt.clock.now()
    if user is None or user.status in (UserStatus.deleted, UserStatus.invited):
        rt.hasher.verify(password, None)  # same time as a real check: no account enumeration
        record(
            session,
            at=now,
            action="auth.login",
            actor_id=None,
            outcome="failure",
            details={"reason": "unknown_account"},
        )
        await _lock_like_an_account(rt, identifier, now)
        raise InvalidCredentials(persist=True)
    _refuse_while_locked(session, user, now)
    if not rt.hasher.verify(password, user.password_hash):
        await _count_failed_login(session, rt, user, now)
    if user.status is UserStatus.suspended:
        raise AccountSuspended(details={"reason": user.suspended_reason})
    if user.email is not None and not user.email_verified:
        raise EmailNotVerified(
            "Verify your email first; POST /api/v1/auth/resend-otp sends a new code"
        )
    user.failed_login_count = 0
    user.locked_until = None
    pair = await _start_session(session, rt, user, method="password", ip=ip, user_agent=user_agent)
    record_account_event(session, at=now, action="auth.login", user_id=user.id)
    return pair


async def _lock_like_an_account(rt: Runtime, identifier: str, now: datetime) -> None:
    """Failures for a name without an account lock it like a real one (``ACCOUNT_LOCKED`` from
    the threshold on), so that the lockout does not tell which accounts exist. Counted in the
    rate-limit store (memory or Redis) for the lockout period."""
    window = RateLimitItemPerMinute(rt.settings.lockout_threshold, rt.settings.lockout_minutes)
    state = await rt.limiter.hit(window, "phantom-lockout", identifier.lower())
    if state.allowed and state.remaining > 0:
        return
    seconds = state.reset_after or rt.settings.lockout_minutes * 60
    locked_until = utc_iso(now + timedelta(seconds=seconds))
    if state.allowed:  # the failure that reached the threshold, as for a real account
        raise AccountLocked(
            "Too many failed sign-ins; the account is locked",
            details={"locked_until": locked_until},
            persist=True,
        )
    raise AccountLocked(
        "The account is locked after repeated failed sign-ins",
        details={"locked_until": locked_until},
        persist=True,
    )


def _refuse_while_locked(session: AsyncSession, user: User, now: datetime) -> None:
    if user.locked_until is None or user.locked_until <= now:
        return
    record_account_event(
        session,
        at=now,
        action="auth.login",
        user_id=user.id,
        outcome="failure",
        details={"reason": "locked"},
    )
    raise AccountLocked(
        "The account is locked after repeated failed sign-ins",
        details={"locked_until": utc_iso(user.locked_until)},
        persist=True,
    )


async def _count_failed_login(
    session: AsyncSession, rt: Runtime, user: User, now: datetime
) -> NoReturn:
    """A wrong password: count it, lock the account at the threshold, and refuse. The count is
    one atomic update, so parallel attempts all count."""
    failures = await repository.add_failed_login(session, user.id)
    details: dict[str, object] = {"reason": "bad_password", "failures": failures}
    if failures < rt.settings.lockout_threshold:
        record_account_event(
            session,
            at=now,
            action="auth.login",
            user_id=user.id,
            outcome="failure",
            details=details,
        )
        raise InvalidCredentials(persist=True)
    locked_until = now + timedelta(minutes=rt.settings.lockout_minutes)
    await repository.lock_account(session, user.id, locked_until)
    details["locked_until"] = utc_iso(locked_until)
    record_account_event(
        session,
        at=now,
        action="auth.account_locked",
        user_id=user.id,
        actor="nobody",
        details=details,
    )
    raise AccountLocked(
        "Too many failed sign-ins; the account is locked",
        details={"locked_until": utc_iso(locked_until)},
        persist=True,
    )


async def refresh(session: AsyncSession, rt: Runtime, token: str) -> TokenPair:
    """Rotate a refresh token; a spent token presented again revokes its whole session."""
    now = rt.clock.now()
    stored = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(token)).with_for_update()
    )
    if stored is None:
        raise InvalidToken("Unknown refresh token")
    auth_session = await session.get(AuthSession, stored.session_id, with_for_update=True)
    assert auth_session is not None
    if stored.used_at is not None or not await repository.spend_refresh_token(
        session, stored.id, now
    ):
        if auth_session.revoked_at is None:
            auth_session.revoked_at, auth_session.revoked_reason = now, "refresh_token_reuse"
            sessions_ended(session, rt, auth_session.user_id, session_id=auth_session.id)
        record_account_event(
            session,
            at=now,
            action="auth.refresh_reuse_detected",
            user_id=auth_session.user_id,
            actor="nobody",
            outcome="failure",
            details={"session_id": str(auth_session.id)},
        )
        raise InvalidToken(
            "This refresh token was already used; the session is revoked", persist=True
        )
    if auth_session.revoked_at is not None or auth_session.expires_at <= now:
        raise InvalidToken("The session has ended")
    user = await session.get(User, auth_session.user_id)
    if user is None or user.status is not UserStatus.active:
        raise InvalidToken("The account is not active")
    record_account_event(
        session,
        at=now,
        action="auth.refresh",
        user_id=user.id,
    )
    return _issue_tokens(session, rt, user, auth_session)


def verified_claims(rt: Runtime, token: str, verified: AccessClaims | None = None) -> AccessClaims:
    """The claims of an access token after checking its signature and expiry (``verified``: this
    request already did), else ``InvalidToken``."""
    if verified is not None:
        return verified
    try:
        return decode_access_token(token, rt.settings.secret_key, now=rt.clock.now())
    except TokenError as exc:
        raise InvalidToken() from exc


@dataclass(frozen=True, slots=True)
class TokenCaller:
    """A user known by a verified access token whose session has not been looked up: for a
    route whose own statement checks the session as :func:`authenticate_bearer` does (order
    entry). :meth:`principal` looks it up, raising as that would."""

    token: str
    claims: AccessClaims

    async def principal(self, session: AsyncSession, rt: Runtime) -> Principal:
        return await authenticate_bearer(session, rt, self.token, verified=self.claims)


# The user and session of an access token: built once, run on every authenticated request.
_BEARER_LOOKUP = (
    select(User, AuthSession.revoked_at)
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(
        User.id == bindparam("user_id", type_=User.id.type),
        AuthSession.id == bindparam("session_id", type_=AuthSession.id.type),
    )
)


async def authenticate_bearer(
    session: AsyncSession, rt: Runtime, token: str, *, verified: AccessClaims | None = None
) -> Principal:
    """The principal of an access token; ``verified`` are its claims if this request already
    checked its signature and expiry (the rate limiter does)."""
    claims = verified_claims(rt, token, verified)
    row = (
        await session.execute(
            _BEARER_LOOKUP, {"user_id": claims.user_id, "session_id": claims.session_id}
        )
    ).one_or_none()
    if row is None or row[1] is not None:
        raise InvalidToken("The session has ended")
    user: User = row[0]
    if user.status is UserStatus.suspended:
        raise AccountSuspended(details={"reason": user.suspended_reason})
    if user.status is not UserStatus.active:
        raise InvalidToken("The account is not active")
    return Principal(user=user, session_id=claims.session_id, claims=claims)


async def authenticate_api_key(session: AsyncSession, rt: Runtime, key: str) -> Principal:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        raise InvalidToken("Malformed API key")
    api_key = await session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    now = rt.clock.now()
    if (
        api_key is None
        or not constant_time_equal(api_key.key_hash, sha256_hex(key))
        or api_key.revoked_at is not None
        or (api_key.expires_at is not None and api_key.expires_at <= now)
    ):
        raise InvalidToken("Unknown, revoked or expired API key")
    user = await session.get(User, api_key.user_id)
    if user is None or user.status is not UserStatus.active:
        raise InvalidToken("The key's owner is not active")
    # Coarse last-use tracking: at most one write a minute per key keeps ingest cheap.
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        api_key.last_used_at = now
    rt.limiter.remember_api_key(api_key.prefix)
    return Principal(user=user, api_key=api_key)


# The event that tells every worker's WebSocket hub to close the sockets of ended sessions.
SESSION_REVOKED = "session_revoked"


def sessions_ended(
    session: AsyncSession,
    rt: Runtime,
    user_id: uuid.UUID,
    *,
    session_id: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> None:
    """After commit, publish on ``user:<id>`` that ``session_id`` (None: every session of the
    user but ``keep``) has ended, so that live sockets signed in with it close at once."""
    data = {
        "session_id": str(session_id) if session_id else None,
        "except_session_id": str(keep) if keep else None,
    }
    emit(session, rt.pubsub, (f"user:{user_id}",), SESSION_REVOKED, data, rt.clock.now())


async def revoke_sessions(
    session: AsyncSession,
    rt: Runtime,
    user_id: uuid.UUID,
    *,
    reason: str,
    keep: uuid.UUID | None = None,
) -> int:
    query = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    result = await session.execute(query.values(revoked_at=rt.clock.now(), revoked_reason=reason))
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count:
        sessions_ended(session, rt, user_id, keep=keep)
    return count


async def logout(session: AsyncSession, rt: Runtime, principal: Principal) -> None:
    assert principal.session_id is not None
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == principal.session_id)
        .values(revoked_at=rt.clock.now(), revoked_reason="logout")
    )
    sessions_ended(session, rt, principal.user.id, session_id=principal.session_id)
    record_account_event(
        session,
        at=rt.clock.now(),
        action="auth.logout",
        user_id=principal.user.id,
    )


async def logout_all(session: AsyncSession, rt: Runtime, principal: Principal) -> int:
    count = await revoke_sessions(session, rt, principal.user.id, reason="logout_all")
    record_account_event(
        session,
        at=rt.clock.now(),
        action="auth.logout_all",
        user_id=principal.user.id,
        details={"sessions": count},
    )
    return count


# --- passwords -------------------------------------------------------------------------------


async def change_password(
    session: AsyncSession, rt: Runtime, principal: Principal, current: str, new: str
) -> None:
    user = principal.user
    if not rt.hasher.verify(current, user.password_hash):
        record_account_event(
            session,
            at=rt.clock.now(),
            action="auth.password_change",
            user_id=user.id,
            outcome="failure",
        )
        raise InvalidCredentials("The current password is wrong", persist=True)
    check_password_policy(new, username=user.username, email=user.email)
    user.password_hash = rt.hasher.hash(new)
    await revoke_sessions(
        session, rt, user.id, reason="password_changed", keep=principal.session_id
    )
    record_account_event(
        session,
        at=rt.clock.now(),
        action="auth.password_change",
        user_id=user.id,
    )


async def forgot_password(session: AsyncSession, rt: Runtime, email: str) -> None:
    """Email a reset code when the account exists; the answer is the same either way."""
    await _rate_limit_account(rt, "forgot", email)
    user = await get_user_by_email(session, email.lower())
    if user is None or user.status is not UserStatus.active:
        _record_unknown_address(session, rt, "auth.password_forgot")
        return
    await _email_code(session, rt, user, OtpPurpose.reset_password, action="auth.password_forgot")


def _record_unknown_address(session: AsyncSession, rt: Runtime, action: str) -> None:
    """An email-driven request for an address without an account: audited like a real one (a
    trace of probing, and a write like the real path's, so both take comparable time)."""
    record(
        session,
        at=rt.clock.now(),
        action=action,
        actor_id=None,
        outcome="failure",
        details={"reason": "unknown_account"},
    )


async def _email_code(
    session: AsyncSession, rt: Runtime, user: User, purpose: OtpPurpose, *, action: str
) -> None:
    """Issue a one-time code for ``purpose``, email it, and audit that it was asked for."""
    code = await _issue_otp(session, rt, user, purpose, minutes=rt.settings.otp_minutes)
    _send_otp_email(session, rt, user, purpose, code)
    record_account_event(session, at=rt.clock.now(), action=action, user_id=user.id, actor="nobody")


async def reset_password(
    session: AsyncSession, rt: Runtime, email: str, otp: str, new_password: str
) -> None:
    user = await _password_from_code(
        session, rt, "reset", email, otp, new_password, OtpPurpose.reset_password, UserStatus.active
    )
    user.failed_login_count, user.locked_until = 0, None
    # Whoever knew the old password is signed out everywhere.
    await revoke_sessions(session, rt, user.id, reason="password_reset")
    if user.email_verified_at is None:
        user.email_verified_at = rt.clock.now()  # the code proved the mailbox
    record_account_event(
        session,
        at=rt.clock.now(),
        action="auth.password_reset",
        user_id=user.id,
    )


async def _password_from_code(
    session: AsyncSession,
    rt: Runtime,
    action: str,
    email: str,
    otp: str,
    password: str,
    purpose: OtpPurpose,
    status: UserStatus,
) -> User:
    """The account of ``email`` in ``status`` whose emailed code for ``purpose`` is ``otp``
    (spent here), with ``password`` (checked against the policy) as its password."""
    await _rate_limit_account(rt, action, email)
    user = await get_user_by_email(session, email.lower())
    if user is not None and user.status is not status:
        user = None
    await _consume_otp(session, rt, user, purpose, otp)
    assert user is not None
    check_password_policy(password, username=user.username, email=user.email)
    user.password_hash = rt.hasher.hash(password)
    return user


async def invite(session: AsyncSession, rt: Runtime, user: User) -> None:
    """Email an invited user the code with which they set a first password."""
    code = await _issue_otp(
        session, rt, user, OtpPurpose.set_password, minutes=INVITE_OTP_HOURS * 60
    )
    _send_otp_email(session, rt, user, OtpPurpose.set_password, code)


async def set_password(
    session: AsyncSession, rt: Runtime, email: str, otp: str, password: str
) -> User:
    purpose, invited = OtpPurpose.set_password, UserStatus.invited
    user = await _password_from_code(
        session, rt, "set_password", email, otp, password, purpose, invited
    )
    now = rt.clock.now()
    user.status = UserStatus.active
    user.email_verified_at = now
    user.updated_at = now
    record_account_event(
        session,
        at=now,
        action="auth.password_set",
        user_id=user.id,
    )
    return user


# --- Sign-In-With-Solana -----------------------------------------------------------------------


def _siws_message(
    rt: Runtime, address: str, nonce: str, issued: datetime, expires: datetime
) -> str:
    return "\n".join(
        (
            f"{rt.settings.public_domain} wants you to sign in with your Solana account:",
            address,
            "",
            "Sign in to Gridex, the community energy exchange.",
            "",
            f"URI: {rt.settings.public_url}",
            "Version: 1",
            f"Chain ID: {rt.settings.chain_id}",
            f"Nonce: {nonce}",
            f"Issued At: {utc_iso(issued)}",
            f"Expiration Time: {utc_iso(expires)}",
        )
    )


def _wallet_key(address: str) -> bytes:
    try:
        return decode_wallet_address(address)
    except ValueError as exc:
        raise ValidationFailed(
            "wallet_address is not a Solana address", details={"wallet_address": str(exc)}
        ) from exc


async def wallet_challenge(session: AsyncSession, rt: Runtime, address: str) -> WalletNonce:
    _wallet_key(address)
    now = rt.clock.now()
    nonce = secrets.token_hex(16)
    expires = now + timedelta(minutes=rt.settings.wallet_nonce_minutes)
    challenge = WalletNonce(
        nonce=nonce,
        wallet_address=address,
        message=_siws_message(rt, address, nonce, now, expires),
        issued_at=now,
        expires_at=expires,
    )
    session.add(challenge)
    return challenge


def _nonce_of(message: str) -> str | None:
    for line in message.splitlines():
        if line.startswith("Nonce: "):
            return line.removeprefix("Nonce: ").strip()
    return None


async def _consume_challenge(
    session: AsyncSession, rt: Runtime, address: str, signature: str, message: str
) -> None:
    """Check the signed message against what was issued, then spend the nonce exactly once."""
    public_key = _wallet_key(address)
    nonce = _nonce_of(message)
    challenge = await session.get(WalletNonce, nonce) if nonce else None
    now = rt.clock.now()
    if challenge is None or challenge.wallet_address != address or challenge.message != message:
        raise InvalidSignature("The message does not match an issued challenge")
    if not verify_ed25519(public_key, message.encode(), signature):
        raise InvalidSignature("The signature does not verify against the wallet address")
    # The conditional update is the atomic spend: two concurrent verifications cannot both win.
    result = await session.execute(
        update(WalletNonce)
        .where(
            WalletNonce.nonce == challenge.nonce,
            WalletNonce.consumed_at.is_(None),
            WalletNonce.expires_at > now,
        )
        .values(consumed_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidSignature("The challenge was already used or has expired")


async def wallet_sign_in(
    session: AsyncSession,
    rt: Runtime,
    address: str,
    signature: str,
    message: str,
    *,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair:
    """Sign in with a wallet; the first sign-in of an unknown wallet creates a wallet-only user."""
    await _consume_challenge(session, rt, address, signature, message)
    user = await session.scalar(select(User).where(User.wallet_address == address))
    now = rt.clock.now()
    if user is None:
        user = User(
            username=f"wallet-{address[:12].lower()}-{secrets.token_hex(2)}",
            email=None,
            role=Role.prosumer,
            status=UserStatus.active,
            wallet_address=address,
            profile_metadata={},
            department_metadata={},
            preferences={},
            created_at=now,
            updated_at=now,
        )
        session.add(user)
        await flush_unique(session)
        record_account_event(
            session,
            at=now,
            action="auth.register",
            user_id=user.id,
            details={"method": "wallet"},
        )
    elif user.status is UserStatus.suspended:
        raise AccountSuspended(details={"reason": user.suspended_reason})
    elif user.status is not UserStatus.active:
        raise InvalidCredentials()
    pair = await _start_session(session, rt, user, method="wallet", ip=ip, user_agent=user_agent)
    record_account_event(
        session,
        at=now,
        action="auth.login",
        user_id=user.id,
        details={"method": "wallet"},
    )
    return pair


async def link_wallet(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    address: str,
    signature: str,
    message: str,
) -> User:
    await _consume_challenge(session, rt, address, signature, message)
    owner = await session.scalar(select(User.id).where(User.wallet_address == address))
    if owner is not None and owner != principal.user.id:
        raise Conflict("This wallet is linked to another account")
    principal.user.wallet_address = address
    principal.user.updated_at = rt.clock.now()
    await flush_unique(session)
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.wallet_linked",
        user_id=principal.user.id,
        details={"wallet_address": address},
    )
    return principal.user


async def unlink_wallet(session: AsyncSession, rt: Runtime, principal: Principal) -> User:
    user = principal.user
    if user.wallet_address is None:
        raise NotFound("No wallet is linked")
    if user.password_hash is None:
        raise Conflict("A wallet-only account cannot unlink its only sign-in method")
    record_account_event(
        session,
        at=rt.clock.now(),
        action="user.wallet_unlinked",
        user_id=user.id,
        details={"wallet_address": user.wallet_address},
    )
    user.wallet_address = None
    user.updated_at = rt.clock.now()
    return user


# --- API keys --------------------------------------------------------------------------------


OwnsMeter = Callable[[AsyncSession, uuid.UUID, uuid.UUID], Awaitable[bool]]
"""``(session, owner_id, meter_id) -> bool``: whether a live meter belongs to the owner. Meters sit
above auth, so the check is handed in (the app wires the meters domain's)."""


async def create_api_key(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    data: ApiKeyIn,
    *,
    owns_meter: OwnsMeter,
) -> tuple[ApiKey, str]:
    """Create a key; the returned secret is never stored or shown again. A key may be bound only
    to a live meter of the key's owner."""
    now = rt.clock.now()
    if data.expires_at is not None and data.expires_at <= now:
        raise ValidationFailed("expires_at must be in the future")
    if data.meter_id is not None and not await owns_meter(
        session, principal.user.id, data.meter_id
    ):
        raise NotFound("No such meter")
    prefix = secrets.token_hex(6)
    secret = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32).replace('_', '-')}"
    api_key = ApiKey(
        user_id=principal.user.id,
        name=data.name,
        prefix=prefix,
        key_hash=sha256_hex(secret),
        scopes=data.scopes,
        meter_id=data.meter_id,
        expires_at=data.expires_at,
        created_at=now,
    )
    session.add(api_key)
    await session.flush()
    record(
        session,
        at=now,
        action="api_key.created",
        actor_id=principal.user.id,
        subject_type="api_key",
        subject_id=api_key.id,
        details={"scopes": data.scopes},
    )
    return api_key, secret


async def list_api_keys(session: AsyncSession, principal: Principal) -> list[ApiKey]:
    keys = await session.scalars(
        select(ApiKey).where(ApiKey.user_id == principal.user.id).order_by(ApiKey.created_at)
    )
    return list(keys)


async def revoke_api_key(
    session: AsyncSession, rt: Runtime, principal: Principal, key_id: uuid.UUID
) -> None:
    api_key = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == principal.user.id)
    )
    if api_key is None:
        raise NotFound("No such API key")
    if api_key.revoked_at is None:
        api_key.revoked_at = rt.clock.now()
        record(
            session,
            at=rt.clock.now(),
            action="api_key.revoked",
            actor_id=principal.user.id,
            subject_type="api_key",
            subject_id=api_key.id,
        )
