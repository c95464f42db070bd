"""One interface over the chain, two implementations (``litesvm`` in process, ``rpc`` over
JSON-RPC). The transaction-building code above it is the same for both."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from solders.account import Account
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction


class ChainUnavailable(RuntimeError):
    """The chain could not be reached or did not answer in time: try again later."""


class TxStatus(enum.StrEnum):
    confirmed = "confirmed"
    failed = "failed"
    unknown = "unknown"  # never seen (or not yet): safe to send once the blockhash expired


@dataclass(frozen=True, slots=True)
class SendResult:
    """``error`` is the chain's reason when it refused or the transaction failed on chain."""

    confirmed: bool
    error: str | None = None
    compute_units: int | None = None


@dataclass(frozen=True, slots=True)
class Blockhash:
    hash: Hash
    # The transaction can never land once the chain's block height is past this.
    last_valid_height: int


class ChainBackend(Protocol):
    name: str
    cluster: str

    async def blockhash(self) -> Blockhash: ...

    async def block_height(self) -> int: ...

    async def slot(self) -> int: ...

    async def rent_exempt(self, size: int) -> int:
        """Lamports that keep an account of ``size`` bytes rent-exempt."""
        ...

    async def send(self, tx: Transaction) -> SendResult:
        """Send and wait for the configured confirmation; ``ChainUnavailable`` when unsure."""
        ...

    async def status(self, signature: Signature) -> TxStatus: ...

    async def accounts(self, addresses: Sequence[Pubkey]) -> list[Account | None]: ...

    async def ensure_funded(self, address: Pubkey, lamports: int) -> None:
        """Give the fee payer SOL where the cluster allows it (LiteSVM, test validators)."""
        ...

    async def checkpoint(self) -> None:
        """Make everything sent so far durable (LiteSVM writes its snapshot)."""
        ...

    async def close(self) -> None: ...
