from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import EmailStr, Field, model_validator

from gridex.auth.models import Role, UserStatus
from gridex.auth.scopes import SCOPES
from gridex.core.schemas import AwareDatetime, InputModel, Metadata, OutputModel, UtcDatetime

PASSWORD_FIELD = Field(min_length=1, max_length=256)
OTP_FIELD = Field(pattern=r"^[0-9]{6}$")
WALLET_FIELD = Field(min_length=32, max_length=44, pattern=r"^[1-9A-HJ-NP-Za-km-z]+$")

API_KEY_SCOPES = SCOPES

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"


class UserOut(OutputModel):
    id: uuid.UUID
    username: str
    email: str | None
    role: Role
    status: UserStatus
    email_verified: bool
    first_name: str | None
    last_name: str | None
    department: str | None
    region: str | None
    phone: str | None
    metadata: dict[str, Any] = Field(validation_alias="profile_metadata")
    department_metadata: dict[str, Any]
    wallet_address: str | None
    created_at: UtcDatetime
    last_login_at: UtcDatetime | None


class RegisterIn(InputModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    email: EmailStr
    password: str = PASSWORD_FIELD
    role: Role = Role.prosumer
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    department: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=64)
    department_metadata: Metadata | None = None


class VerifyEmailIn(InputModel):
    email: EmailStr
    otp: str = OTP_FIELD


class EmailIn(InputModel):
    email: EmailStr


class LoginIn(InputModel):
    username: str | None = Field(default=None, max_length=254)
    email: str | None = Field(default=None, max_length=254)
    password: str = PASSWORD_FIELD

    @model_validator(mode="after")
    def _one_identifier(self) -> LoginIn:
        if not (self.username or self.email):
            raise ValueError("give a username or an email")
        return self

    @property
    def identifier(self) -> str:
        return (self.username or self.email or "").lower()


class RefreshIn(InputModel):
    refresh_token: str = Field(min_length=10, max_length=200)


class TokenPairOut(OutputModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    user: UserOut


class PasswordChangeIn(InputModel):
    current_password: str = PASSWORD_FIELD
    new_password: str = PASSWORD_FIELD


class PasswordResetIn(InputModel):
    email: EmailStr
    otp: str = OTP_FIELD
    new_password: str = PASSWORD_FIELD


class SetPasswordIn(InputModel):
    email: EmailStr
    otp: str = OTP_FIELD
    password: str = PASSWORD_FIELD


class WalletChallengeIn(InputModel):
    wallet_address: str = WALLET_FIELD


class WalletChallengeOut(OutputModel):
    nonce: str
    message: str
    expires_at: UtcDatetime


class WalletVerifyIn(InputModel):
    wallet_address: str = WALLET_FIELD
    signature: str = Field(min_length=64, max_length=100)
    message: str = Field(min_length=1, max_length=2000)


class ValidateOut(OutputModel):
    valid: Literal[True] = True
    kind: Literal["access_token", "api_key"]
    user_id: uuid.UUID
    username: str
    role: Role
    session_id: uuid.UUID | None = None
    scopes: list[str] | None = None
    expires_at: UtcDatetime | None = None


class ApiKeyIn(InputModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1)
    meter_id: uuid.UUID | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _known_scopes(self) -> ApiKeyIn:
        unknown = set(self.scopes) - API_KEY_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}; known: {sorted(API_KEY_SCOPES)}")
        self.scopes = sorted(set(self.scopes))
        return self


class ApiKeyOut(OutputModel):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    meter_id: uuid.UUID | None
    expires_at: UtcDatetime | None
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    created_at: UtcDatetime


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The secret; shown only in this response")
