"""The chain mirror's tables: platform records, custodial wallets, the outbox and the
mirror's own bookkeeping.

Units: credit amounts are integer micros (1 token base unit = 1 micro), energy amounts integer Wh
(1 token base unit = 1 Wh), so ledger and chain amounts are the same integers.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base

# An auto-incrementing 64-bit key on both backends (SQLite only auto-increments INTEGER).
_SEQ = BigInteger().with_variant(Integer, "sqlite")


class ChainRecord(Base):
    """What the chain was set up with (platform address, mints, token accounts), written on
    first start and checked on every later one: a value never changes once recorded."""

    __tablename__ = "chain_records"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class ChainWallet(Base):
    """A user's custodial keypair: the 32-byte seed sealed with AES-GCM under a key derived
    from ``GRIDEX_SECRET_KEY`` (``key_id`` names which one), never stored in clear."""

    __tablename__ = "chain_wallets"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), unique=True)
    # 12-byte nonce followed by the ciphertext and its tag.
    sealed_seed: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class OutboxStatus(enum.StrEnum):
    pending = "pending"
    submitted = "submitted"
    confirmed = "confirmed"
    failed = "failed"


class TxKind(enum.StrEnum):
    mint_credit = "mint_credit"
    burn_credit = "burn_credit"
    transfer = "transfer"
    settlement = "settlement"
    memo = "memo"
    # Token accounts of a new custodial wallet and the platform's delegation over them.
    account = "account"


class ChainTransaction(Base):
    """One chain transaction of the outbox, sent in ``id`` order.

    ``pending`` (built from the journal, not signed yet) -> ``submitted`` (signed; its signature
    and bytes are committed *before* it is sent, so a crash between send and record finds the
    signature and checks it instead of sending anew) -> ``confirmed`` or ``failed`` (after
    ``GRIDEX_CHAIN_MAX_ATTEMPTS`` rejections).
    """

    __tablename__ = "chain_transactions"
    __table_args__ = (
        Index("ix_chain_transactions_status_id", "status", "id"),
        Index("ix_chain_transactions_epoch", "epoch_id"),
    )

    id: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.pending.value)
    # Instructions, each length-prefixed (4 bytes, big-endian) in solders' binary form.
    instructions: Mapped[bytes] = mapped_column(LargeBinary)
    # Custodial wallets that sign besides the platform (space-separated user ids), if any.
    signers: Mapped[str] = mapped_column(String(2000), default="")
    epoch_id: Mapped[uuid.UUID | None]
    memo: Mapped[str | None] = mapped_column(String(200))
    # Token movements in the transaction (credit and energy), for throughput figures.
    transfers: Mapped[int] = mapped_column(Integer, default=0)
    # A settlement lane's transaction is paid for by that lane's fee payer (else the platform).
    lane: Mapped[int | None] = mapped_column(SmallInteger)
    signature: Mapped[str | None] = mapped_column(String(100), unique=True)
    # The signed transaction last sent, and the block height after which it can never land.
    signed: Mapped[bytes | None] = mapped_column(LargeBinary)
    last_valid_height: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500))
    compute_units: Mapped[int | None] = mapped_column(BigInteger)
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]


class ChainTransactionUser(Base):
    """Which users a transaction concerns (``GET /blockchain/transactions`` lists one's own)."""

    __tablename__ = "chain_transaction_users"
    __table_args__ = (Index("ix_chain_transaction_users_user_tx", "user_id", "transaction_id"),)

    transaction_id: Mapped[int] = mapped_column(
        _SEQ, ForeignKey("chain_transactions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


class ChainHolder(Base):
    """The ledger balance the mirror has turned into chain instructions so far, per chain
    holder (a user, or the platform's ``escrow`` and ``fees``): signed micros, before the rule
    that a token balance is never below zero (see :mod:`gridex.chain.mirror`)."""

    __tablename__ = "chain_holders"

    holder: Mapped[str] = mapped_column(String(40), primary_key=True)
    ledger_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # Energy tokens the mirror has moved to this holder (Wh).
    energy_wh: Mapped[int] = mapped_column(BigInteger, default=0)


class ChainTradeEnergy(Base):
    """The energy the mirror has delivered on chain for a trade (Wh minted to its seller and
    moved to its buyer), so that a re-settlement moves only the difference."""

    __tablename__ = "chain_trade_energy"

    trade_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    wh: Mapped[int] = mapped_column(BigInteger)


class MirroredEntry(Base):
    """A ledger entry the mirror has handled (with or without a chain action). Kept for the
    mirror's look-back window only (see ``GRIDEX_CHAIN_MIRROR_WINDOW_SECONDS``)."""

    __tablename__ = "chain_mirrored_entries"

    entry_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    entry_created_at: Mapped[datetime] = mapped_column(index=True)


class ChainMismatch(Base):
    """A difference found by reconciliation: ledger (under the no-negative rule) vs chain."""

    __tablename__ = "chain_mismatches"

    id: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    ledger_micros: Mapped[int] = mapped_column(BigInteger)
    chain_micros: Mapped[int] = mapped_column(BigInteger)
    found_at: Mapped[datetime] = mapped_column(index=True)
