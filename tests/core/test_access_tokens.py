"""Access token checks: verified claims are reused for the same token, expiry never is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gridex.core.security import AccessClaims, TokenError, decode_access_token, encode_access_token

SECRET = "a-secret-that-is-long-enough-for-hs256-signatures"
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def _token(secret: str = SECRET, minutes: int = 15) -> tuple[str, AccessClaims]:
    claims = AccessClaims(
        user_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        role="prosumer",
        jti=uuid.uuid4().hex,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=minutes),
    )
    return encode_access_token(claims, secret), claims


def test_a_token_decodes_the_same_every_time_until_it_expires() -> None:
    token, claims = _token()
    assert decode_access_token(token, SECRET, now=NOW) == claims
    assert decode_access_token(token, SECRET, now=NOW + timedelta(minutes=14)) == claims
    with pytest.raises(TokenError, match="expired"):
        decode_access_token(token, SECRET, now=NOW + timedelta(minutes=15))
    # Still refused when asked again, and still accepted for an earlier time.
    with pytest.raises(TokenError, match="expired"):
        decode_access_token(token, SECRET, now=NOW + timedelta(hours=1))
    assert decode_access_token(token, SECRET, now=NOW) == claims


def test_a_verified_token_does_not_vouch_for_another_secret_or_an_altered_copy() -> None:
    token, _ = _token()
    decode_access_token(token, SECRET, now=NOW)
    with pytest.raises(TokenError):
        decode_access_token(token, SECRET + "-rotated", now=NOW)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(TokenError):
        decode_access_token(f"{header}.{payload}.{flipped}", SECRET, now=NOW)
    forged, _ = _token(secret="another-secret-that-is-long-enough-for-hs256")
    with pytest.raises(TokenError):
        decode_access_token(forged, SECRET, now=NOW)
