"""Request and response models of the wallet, ledger and installations.

Money is integer micros inside and a 6-decimal string in the API (inputs: string or number).
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema, field_validator

from gridex.core.schemas import InputModel, Money, OutputModel, UtcDatetime
from gridex.core.units import UnitError, money_to_micros

# 1e12 units: far above any real amount, far below the 64-bit limit of the columns.
MAX_AMOUNT_MICROS = 10**18


def _amount(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError("amount must be a decimal string or a number")
    try:
        micros = money_to_micros(value)
    except UnitError as exc:
        raise ValueError(str(exc)) from exc
    if micros <= 0:
        raise ValueError("amount must be greater than zero")
    if micros > MAX_AMOUNT_MICROS:
        raise ValueError("amount is too large")
    return micros


# A positive money amount in the request, as micros.
AmountIn = Annotated[
    int,
    BeforeValidator(_amount),
    WithJsonSchema({"type": "string", "example": "25.000000", "description": "money > 0"}),
]


class WalletOut(OutputModel):
    currency: str
    available: Money
    reserved: Money
    escrow_pending: Money
    # Null until the chain lands (GRIDEX_CHAIN): energy tokens live on chain, not in the ledger.
    energy_tokens_kwh: float | None
    chain_address: str | None
    linked_wallet: str | None


class PostingOut(OutputModel):
    account: str
    amount: Money
    balance_after: Money | None


class TransactionOut(OutputModel):
    id: uuid.UUID
    type: str
    description: str
    reference_type: str | None
    reference_id: str | None
    created_at: UtcDatetime
    # Net change of the user's available + reserved by this entry (0 for a reservation).
    amount: Money
    postings: list[PostingOut]


class BalancesOut(OutputModel):
    available: Money
    reserved: Money
    total: Money


class MovementOut(OutputModel):
    entry_id: uuid.UUID
    type: str
    description: str
    at: UtcDatetime
    available: Money
    reserved: Money
    total: Money


class StatementOut(OutputModel):
    date: date
    currency: str
    opening: BalancesOut
    closing: BalancesOut
    credits: Money
    debits: Money
    movements: list[MovementOut]


class TrialBalanceAccountOut(OutputModel):
    id: uuid.UUID
    kind: str
    user_id: uuid.UUID | None
    balance: Money


class TrialBalanceOut(OutputModel):
    currency: str
    as_of: UtcDatetime
    accounts: list[TrialBalanceAccountOut]
    platform: dict[str, Money]
    users_available: Money
    users_reserved: Money
    total: Money


# --- installations --------------------------------------------------------------------------


def _basis_points(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError("percent must be a number")
    try:
        bp = Decimal(str(value)) * 100
    except ArithmeticError as exc:
        raise ValueError("percent must be a number") from exc
    if not bp.is_finite() or bp != bp.to_integral_value():
        raise ValueError("percent has at most 2 decimals")
    if not 0 <= bp <= 10_000:
        raise ValueError("percent must be between 0 and 100")
    return int(bp)


def _percent(bp: int) -> float:
    return float(Decimal(bp) / 100)


# Percent in, stored as basis points (45.5 -> 4550); out as a JSON number again.
PercentIn = Annotated[
    int,
    BeforeValidator(_basis_points),
    WithJsonSchema({"type": "number", "example": 45, "minimum": 0, "maximum": 100}),
]
Percent = Annotated[
    int,
    PlainSerializer(_percent, return_type=float),
    WithJsonSchema({"type": "number", "example": 45}),
]


class ShareIn(InputModel):
    user_id: uuid.UUID
    percent: PercentIn


class InstallationIn(InputModel):
    meter_id: uuid.UUID
    shares: list[ShareIn] = Field(min_length=1, max_length=100)
    platform_percent: PercentIn

    @field_validator("shares")
    @classmethod
    def _distinct(cls, shares: list[ShareIn]) -> list[ShareIn]:
        if len({s.user_id for s in shares}) != len(shares):
            raise ValueError("each user may hold one share")
        if any(s.percent == 0 for s in shares):
            raise ValueError("a share must be above 0 percent")
        return shares

    def total_bp(self) -> int:
        return sum(s.percent for s in self.shares) + self.platform_percent


class ShareOut(OutputModel):
    user_id: uuid.UUID
    percent: Percent


class InstallationOut(OutputModel):
    id: uuid.UUID
    meter_id: uuid.UUID
    shares: list[ShareOut]
    platform_percent: Percent
    created_at: UtcDatetime
    updated_at: UtcDatetime
