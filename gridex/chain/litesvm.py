"""The ``litesvm`` backend: the real SPL Token, Associated Token Account and Memo programs
(bundled with ``solders.litesvm``) running in this process.

Durability: :meth:`LiteSVMBackend.checkpoint` writes every account the platform uses (its fee
payer, the mints and all token accounts) and the signatures of the latest transactions to
``gridex-chain.bin`` in the data dir (a temporary file renamed over the old one, so a crash
leaves the previous snapshot), and a new backend restores them. A transaction sent after the
last snapshot is lost with a crash, and so is its outbox row's confirmation: the outbox finds
its signature unknown and sends it again, so the state never runs ahead of the database.

The VM lives on a thread of its own, and every call reaches it there. Running the programs leaves
the x87 floating-point state of the running thread dirty: afterwards SQLite in that thread parsed
``1e-310`` as NULL and formatted ``strftime('%f')`` as ``NaN``, and threads started later (each
aiosqlite connection has one) inherit the state. Confined to its own thread, the VM cannot reach
the database threads. It also keeps program execution off the event loop.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from solders.account import Account
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_metadata import FailedTransactionMetadata
from spl.token.constants import TOKEN_PROGRAM_ID

from gridex.chain.backend import Blockhash, SendResult, TxStatus

SNAPSHOT_FILE = "gridex-chain.bin"
_MAGIC = b"GRIDEXSVM1"
# Signatures kept for the "was it sent?" check after a restart: far more than one outbox batch.
_REMEMBERED = 100_000
# LiteSVM has no block height that advances on its own; its blockhash never expires.
_NEVER = 2**62
T = TypeVar("T")


class LiteSVMBackend:
    name = "litesvm"

    def __init__(
        self, data_dir: Path, *, cluster: str = "litesvm", fee_payers: list[Pubkey]
    ) -> None:
        self.cluster = cluster
        self.path = data_dir / SNAPSHOT_FILE
        self._fee_payers = fee_payers
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="litesvm")
        self._seen: deque[Signature] = deque(maxlen=_REMEMBERED)
        self._seen_set: set[Signature] = set()
        # The snapshot this process last read or wrote, see :meth:`_sync`.
        self._known: tuple[int, int, int] | None = None
        self._svm = self._thread.submit(self._start).result()

    def _start(self) -> LiteSVM:
        self._svm = self._fresh()
        self._sync()
        return self._svm

    async def _on_vm(self, work: Callable[[], T]) -> T:
        """Run ``work`` (which catches up with the snapshot first) on the VM's thread."""

        def run() -> T:
            self._sync()
            return work()

        return await asyncio.get_running_loop().run_in_executor(self._thread, run)

    @staticmethod
    def _fresh() -> LiteSVM:
        # Stored transactions are resent byte for byte after a restart, when LiteSVM's
        # blockhash is another one: duplicates are caught by signature instead.
        return LiteSVM().with_blockhash_check(False)

    def _sync(self) -> None:
        """Load the snapshot when another process has written a newer one. Several processes
        (``gridex serve`` workers, ``gridex worker``) each hold a LiteSVM; the one holding the
        mirror's lease sends and checkpoints, the others read: every operation first catches up
        with the file, so reads are current and a process that takes over the lease sends from
        the latest state (a stat call, about a microsecond)."""
        try:
            written = self._stamp()
        except FileNotFoundError:
            return
        if written == self._known:
            return
        self._svm = self._fresh()
        self._seen.clear()
        self._seen_set.clear()
        self._restore(self.path.read_bytes())
        self._known = written

    # --- snapshot ---------------------------------------------------------------------------

    def _tracked(self) -> list[tuple[Pubkey, Account]]:
        accounts = list(self._svm.get_program_accounts(TOKEN_PROGRAM_ID))
        for address in self._fee_payers:
            payer = self._svm.get_account(address)
            if payer is not None:
                accounts.append((address, payer))
        return accounts

    def snapshot(self) -> bytes:
        out = bytearray(_MAGIC)
        out += struct.pack(">Q", self._svm.get_clock().slot)
        accounts = self._tracked()
        out += struct.pack(">I", len(accounts))
        for address, account in accounts:
            raw = bytes(account)
            out += bytes(address) + struct.pack(">I", len(raw)) + raw
        out += struct.pack(">I", len(self._seen))
        for signature in self._seen:
            out += bytes(signature)
        return bytes(out)

    def _restore(self, data: bytes) -> None:
        if not data.startswith(_MAGIC):
            raise ValueError(f"{self.path} is not a Gridex chain snapshot")
        at = len(_MAGIC)
        (slot,) = struct.unpack_from(">Q", data, at)
        (count,) = struct.unpack_from(">I", data, at + 8)
        at += 12
        for _ in range(count):
            address = Pubkey.from_bytes(data[at : at + 32])
            (size,) = struct.unpack_from(">I", data, at + 32)
            at += 36
            self._svm.set_account(address, Account.from_bytes(data[at : at + size]))
            at += size
        (signatures,) = struct.unpack_from(">I", data, at)
        at += 4
        for _ in range(signatures):
            self._remember(Signature.from_bytes(data[at : at + 64]))
            at += 64
        if slot:
            self._svm.warp_to_slot(slot)

    def _remember(self, signature: Signature) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(signature)
        self._seen_set.add(signature)

    async def checkpoint(self) -> None:
        snapshot = await asyncio.get_running_loop().run_in_executor(self._thread, self.snapshot)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(snapshot)
        temporary.replace(self.path)
        self._known = self._stamp()

    def _stamp(self) -> tuple[int, int, int]:
        """What tells one snapshot from the next: each is a new file (inode) renamed in place,
        and the modification time alone can repeat within the file system's clock tick."""
        stat = self.path.stat()
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    # --- the backend interface --------------------------------------------------------------

    async def blockhash(self) -> Blockhash:
        return await self._on_vm(lambda: Blockhash(self._svm.latest_blockhash(), _NEVER))

    async def block_height(self) -> int:
        return await self._on_vm(lambda: int(self._svm.get_clock().slot))

    async def slot(self) -> int:
        return await self._on_vm(lambda: int(self._svm.get_clock().slot))

    async def rent_exempt(self, size: int) -> int:
        return await self._on_vm(lambda: int(self._svm.minimum_balance_for_rent_exemption(size)))

    async def send(self, tx: Transaction) -> SendResult:
        return await self._on_vm(lambda: self._send(tx))

    def _send(self, tx: Transaction) -> SendResult:
        signature = tx.signatures[0]
        if signature in self._seen_set:
            return SendResult(True)
        result = self._svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            error = str(result.err())
            if error == "AlreadyProcessed":
                self._remember(signature)
                return SendResult(True)
            return SendResult(False, error=error)
        self._remember(signature)
        # Each transaction in its own slot, as on a cluster: the slot counts transactions.
        self._svm.warp_to_slot(self._svm.get_clock().slot + 1)
        return SendResult(True, compute_units=int(result.compute_units_consumed()))

    async def status(self, signature: Signature) -> TxStatus:
        seen = await self._on_vm(lambda: signature in self._seen_set)
        return TxStatus.confirmed if seen else TxStatus.unknown

    async def accounts(self, addresses: Sequence[Pubkey]) -> list[Account | None]:
        return await self._on_vm(lambda: [self._svm.get_account(a) for a in addresses])

    async def ensure_funded(self, address: Pubkey, lamports: int) -> None:
        def fund() -> None:
            balance = self._svm.get_balance(address) or 0
            if balance < lamports:
                self._svm.airdrop(address, lamports - balance)

        await self._on_vm(fund)

    async def close(self) -> None:
        self._thread.shutdown(wait=True)
