"""Password hashing, access tokens, opaque secrets and signatures."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import base58
import jwt
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

JWT_ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "access"


class PasswordHasher:
    """Argon2id hashing with a precomputed dummy hash for constant-time misses."""

    def __init__(self, *, time_cost: int, memory_kib: int) -> None:
        self._hash = PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib),))
        self._dummy = self._hash.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Check a password; with no hash, still spend the time of one check."""
        if password_hash is None:
            self._hash.verify(password, self._dummy)
            return False
        return self._hash.verify(password, password_hash)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    role: str
    jti: str
    issued_at: datetime
    expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "sub": str(self.user_id),
            "sid": str(self.session_id),
            "role": self.role,
            "jti": self.jti,
            "iat": int(self.issued_at.timestamp()),
            "exp": int(self.expires_at.timestamp()),
            "typ": ACCESS_TOKEN_TYPE,
        }


class TokenError(ValueError):
    """The token is malformed, forged or expired."""


def encode_access_token(claims: AccessClaims, secret: str) -> str:
    return jwt.encode(claims.as_dict(), secret, algorithm=JWT_ALGORITHM)


def decode_access_token(token: str, secret: str, *, now: datetime) -> AccessClaims:
    """Verify signature and expiry against ``now`` (the injectable clock, not the wall clock)."""
    claims = _verified_claims(token, secret)
    if claims.expires_at <= now:
        raise TokenError("token expired")
    return claims


@lru_cache(maxsize=4096)
def _verified_claims(token: str, secret: str) -> AccessClaims:
    """The claims of a token whose signature and form check out (expiry is the caller's).

    Cached by the exact token and secret: a client sends the same token on every request until
    it expires, and checking it again would give the same answer (a forged or altered token is
    another key, and failures are not cached). Expiry depends on the time, so it is checked on
    every call."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"verify_exp": False, "verify_iat": False, "require": ["sub", "sid", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from exc
    if payload.get("typ") != ACCESS_TOKEN_TYPE:
        raise TokenError("not an access token")
    try:
        return AccessClaims(
            user_id=uuid.UUID(payload["sub"]),
            session_id=uuid.UUID(payload["sid"]),
            role=str(payload.get("role", "")),
            jti=str(payload.get("jti", "")),
            issued_at=datetime.fromtimestamp(int(payload.get("iat", 0)), tz=UTC),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=UTC),
        )
    except (ValueError, TypeError) as exc:
        raise TokenError("malformed claims") from exc


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    """Hash of a high-entropy secret (refresh tokens, API keys); lookups stay indexable."""
    return hashlib.sha256(value.encode()).hexdigest()


def keyed_hash(secret_key: str, *parts: str) -> str:
    """HMAC of low-entropy values (OTP codes) so a database dump does not reveal them."""
    return hmac.new(secret_key.encode(), "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_otp() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def expiry(now: datetime, *, minutes: float = 0, days: float = 0) -> datetime:
    return now + timedelta(minutes=minutes, days=days)


def decode_wallet_address(address: str) -> bytes:
    """A Solana address is the base58 form of a 32-byte Ed25519 public key."""
    try:
        raw = base58.b58decode(address)
    except ValueError as exc:
        raise ValueError("not base58") from exc
    if len(raw) != 32:
        raise ValueError("not a 32-byte public key")
    return bytes(raw)


def verify_ed25519(public_key: bytes, message: bytes, signature_b58: str) -> bool:
    try:
        signature = base58.b58decode(signature_b58)
    except ValueError:
        return False
    if len(signature) != 64:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True
