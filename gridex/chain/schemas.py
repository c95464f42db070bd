"""Response models of the chain endpoints. Credits are money strings (1 base unit = 1 micro),
energy is kWh (1 base unit = 1 Wh), SOL a 9-decimal string (1 lamport = 1e-9 SOL)."""

from __future__ import annotations

from typing import Literal

from gridex.core.schemas import Kwh, Money, OutputModel, UtcDatetime


class MintsOut(OutputModel):
    energy: str
    credit: str


class NetworkOut(OutputModel):
    backend: Literal["litesvm", "rpc", "off"]
    cluster: str | None
    slot: int | None
    healthy: bool
    mints: MintsOut | None
    platform: str | None


class ChainTransactionOut(OutputModel):
    # Null until the transaction is signed (`pending`).
    signature: str | None
    kind: str
    status: str
    # The start of the epoch a settlement transaction belongs to.
    epoch: UtcDatetime | None = None
    memo: str | None = None
    attempts: int
    error: str | None = None
    created_at: UtcDatetime
    confirmed_at: UtcDatetime | None = None


class InstructionOut(OutputModel):
    program: str
    # e.g. `transfer_checked`, `mint_to_checked`, `memo`
    type: str
    accounts: list[str]
    # Base units (micros of credit, Wh of energy) for token movements.
    amount: int | None = None
    memo: str | None = None


class ChainTransactionDetailOut(ChainTransactionOut):
    compute_units: int | None = None
    instructions: list[InstructionOut]


class BalanceOut(OutputModel):
    address: str
    sol: str
    credit: Money
    energy_kwh: Kwh


class MismatchOut(OutputModel):
    # A user id, or `escrow` / `fees`.
    account: str
    ledger: Money
    chain: Money
    # chain - ledger
    difference: Money


class ReconciliationOut(OutputModel):
    checked_at: UtcDatetime
    accounts: int
    mismatches: list[MismatchOut]
    # Outbox transactions not confirmed yet: a difference may only be the mirror's lag.
    in_flight: int
