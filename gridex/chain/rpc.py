"""The ``rpc`` backend: any Solana JSON-RPC endpoint (a local validator, devnet, mainnet) through
solana-py's async client.

Every call is retried with exponential backoff when the endpoint cannot be reached or answers
HTTP 429/5xx (``SolanaRpcException``); after the last try the outbox sees ``ChainUnavailable``
and keeps the transaction's signature for the next round. ``GRIDEX_CHAIN_RPC_RATE_LIMIT`` caps
the requests per second so that public endpoints are not hammered. A sent transaction is
confirmed by polling its signature status at ``GRIDEX_CHAIN_COMMITMENT`` until its blockhash
expires: an expired, unseen transaction can never land, so the outbox may sign anew.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.account import Account
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_status import TransactionConfirmationStatus

from gridex.chain.backend import Blockhash, ChainUnavailable, SendResult, TxStatus

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Confirmation statuses that satisfy each commitment (tuples: the statuses are unhashable).
_REACHED = {
    "processed": (
        TransactionConfirmationStatus.Processed,
        TransactionConfirmationStatus.Confirmed,
        TransactionConfirmationStatus.Finalized,
    ),
    "confirmed": (TransactionConfirmationStatus.Confirmed, TransactionConfirmationStatus.Finalized),
    "finalized": (TransactionConfirmationStatus.Finalized,),
}
_ACCOUNTS_PER_CALL = 100  # getMultipleAccounts' limit
_BLOCKHASH_LIFETIME = 151


class RpcBackend:
    name = "rpc"

    def __init__(
        self,
        url: str,
        *,
        cluster: str,
        commitment: str = "confirmed",
        attempts: int = 4,
        backoff_seconds: float = 0.25,
        poll_seconds: float = 0.4,
        rate_limit: float = 0,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.cluster = cluster
        self._commitment = commitment
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._poll = poll_seconds
        self._client = AsyncClient(
            url,
            commitment=Commitment(commitment),
            timeout=timeout_seconds,
            rate_limit=rate_limit,
            http2=False,
        )

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """``request()``, retried with exponential backoff while the endpoint does not answer."""
        for attempt in range(self._attempts):
            try:
                return await request()
            except SolanaRpcException as exc:
                if attempt == self._attempts - 1:
                    raise ChainUnavailable(f"{type(exc.__cause__ or exc).__name__}: {exc}") from exc
                log.warning("chain_rpc_retry", attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def blockhash(self) -> Blockhash:
        response = await self._call(lambda: self._client.get_latest_blockhash())
        return Blockhash(response.value.blockhash, response.value.last_valid_block_height)

    async def block_height(self) -> int:
        return int((await self._call(lambda: self._client.get_block_height())).value)

    async def slot(self) -> int:
        return int((await self._call(lambda: self._client.get_slot())).value)

    async def rent_exempt(self, size: int) -> int:
        call = self._client.get_minimum_balance_for_rent_exemption
        return int((await self._call(lambda: call(size))).value)

    async def send(self, tx: Transaction) -> SendResult:
        opts = TxOpts(skip_confirmation=True, preflight_commitment=Commitment(self._commitment))
        try:
            await self._call(lambda: self._client.send_raw_transaction(bytes(tx), opts))
        except RPCException as exc:
            # Refused in preflight: it never reached a leader.
            return SendResult(False, error=str(exc)[:500])
        return await self._confirm(tx.signatures[0])

    async def _confirm(self, signature: Signature) -> SendResult:
        # A blockhash is valid for 150 blocks, and this one was fetched before the send: past
        # that height the transaction can never land.
        expires = await self.block_height() + _BLOCKHASH_LIFETIME
        while True:
            status = await self._status(signature)
            if status is TxStatus.confirmed:
                return SendResult(True)
            if status is TxStatus.failed:
                return SendResult(False, error="failed on chain")
            if await self.block_height() > expires:
                raise ChainUnavailable(f"{signature} not confirmed before its blockhash expired")
            await asyncio.sleep(self._poll)

    async def _status(self, signature: Signature) -> TxStatus:
        response = await self._call(
            lambda: self._client.get_signature_statuses(
                [signature], search_transaction_history=True
            )
        )
        found = response.value[0]
        if found is None:
            return TxStatus.unknown
        if found.err is not None:
            return TxStatus.failed
        if found.confirmation_status in _REACHED[self._commitment]:
            return TxStatus.confirmed
        return TxStatus.unknown

    async def status(self, signature: Signature) -> TxStatus:
        return await self._status(signature)

    async def accounts(self, addresses: Sequence[Pubkey]) -> list[Account | None]:
        out: list[Account | None] = []
        for at in range(0, len(addresses), _ACCOUNTS_PER_CALL):
            chunk = list(addresses[at : at + _ACCOUNTS_PER_CALL])
            response = await self._call(lambda c=chunk: self._client.get_multiple_accounts(c))  # type: ignore[misc]
            out.extend(response.value)
        return out

    async def ensure_funded(self, address: Pubkey, lamports: int) -> None:
        """Ask for an airdrop where the cluster gives one (local validators, devnet); elsewhere
        the operator funds the platform address."""
        balance = (await self._call(lambda: self._client.get_balance(address))).value
        if balance >= lamports:
            return
        try:
            response = await self._call(
                lambda: self._client.request_airdrop(address, lamports - balance)
            )
        except RPCException as exc:
            log.warning("chain_airdrop_refused", address=str(address), error=str(exc))
            return
        await self._confirm(response.value)

    async def checkpoint(self) -> None:
        return None  # the cluster is durable

    async def close(self) -> None:
        await self._client.close()
