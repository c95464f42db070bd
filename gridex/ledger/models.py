"""The double-entry ledger: accounts with stored balances, immutable entries and their postings.

Units: every ``*_micros`` column is integer micro-units of the deployment currency. Sign: a
posting adds its (signed) amount to its account's balance; the postings of one entry sum to zero,
so the balances of all accounts (the trial balance) sum to zero at every commit.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from functools import lru_cache

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class AccountKind(enum.StrEnum):
    # Per user: money the user may spend, and money held for open orders or pending withdrawals.
    available = "available"
    reserved = "reserved"
    # Platform: trade value between clearing and settlement; platform fees earned; counterparty
    # of imbalances and grid energy; money received from the payment provider (goes negative by
    # every top-up: it mirrors cash held outside the ledger); money paid out to users.
    escrow = "escrow"
    fees = "fees"
    grid = "grid"
    deposits = "deposits"
    payouts = "payouts"


USER_KINDS = frozenset({AccountKind.available, AccountKind.reserved})
PLATFORM_KINDS = frozenset(AccountKind) - USER_KINDS


_NAMESPACE = uuid.UUID("6f1c5a52-4a0e-4d4b-9a57-3f4a0c1e7d21")


@lru_cache(maxsize=65536)
def account_id(kind: AccountKind, user_id: uuid.UUID | None = None) -> uuid.UUID:
    """The deterministic id of a user's or the platform's account of ``kind``."""
    return uuid.uuid5(_NAMESPACE, f"{user_id or 'platform'}:{kind.value}")


class EntryType(enum.StrEnum):
    """What an entry records; the column is a plain string so that new types need no migration."""

    topup = "topup"
    refund = "refund"
    withdrawal_hold = "withdrawal_hold"
    withdrawal_payout = "withdrawal_payout"
    withdrawal_release = "withdrawal_release"
    order_reserve = "order_reserve"
    order_release = "order_release"
    trade_capture = "trade_capture"
    settlement_payout = "settlement_payout"
    settlement_fee = "settlement_fee"
    settlement_charge = "settlement_charge"
    settlement_credit = "settlement_credit"
    revenue_share = "revenue_share"
    invoice_payment = "invoice_payment"
    transfer = "transfer"
    adjustment = "adjustment"


class ReferenceType(enum.StrEnum):
    order = "order"
    trade = "trade"
    epoch = "epoch"
    payment = "payment"
    refund = "refund"
    withdrawal = "withdrawal"
    invoice = "invoice"


class LedgerAccount(Base):
    """One account. Ids are deterministic (uuid5 of owner and kind), so accounts are created
    lazily on first use without a lookup; ``balance_micros`` always equals the sum of its postings
    (``gridex ledger verify`` checks it)."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (Index("ix_ledger_accounts_user_kind", "user_id", "kind", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Null for platform accounts.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    # Signed micros; below zero only for `available` after a settlement charge (a debt) and for
    # platform accounts such as `deposits` and `grid`.
    balance_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]


class JournalEntry(IdMixin, Base):
    """An immutable journal entry: two or more postings that sum to zero."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_reference", "reference_type", "reference_id"),)

    type: Mapped[str] = mapped_column(String(32), index=True)
    reference_type: Mapped[str | None] = mapped_column(String(16))
    reference_id: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(index=True)


class Posting(IdMixin, Base):
    """One leg of an entry. ``user_id`` is the account's owner, or for a platform account the user
    on whose behalf it moved (e.g. the buyer for escrow), so a user's history is one index scan."""

    __tablename__ = "ledger_postings"
    __table_args__ = (
        Index("ix_ledger_postings_user_created", "user_id", "created_at"),
        Index("ix_ledger_postings_account_created", "account_id", "created_at"),
    )

    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_accounts.id"))
    user_id: Mapped[uuid.UUID | None]
    # Signed micros, never zero: added to the account's balance.
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    # The account's balance right after this posting (row-locked update, so it is exact).
    balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class Installation(IdMixin, Base):
    """Revenue shares of a meter (host / investors / platform), in basis points summing to 10000.
    One per meter; meters are only soft-deleted, so the key never blocks a deletion."""

    __tablename__ = "installations"

    meter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meters.id"), unique=True)
    platform_bp: Mapped[int]
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class InstallationShare(IdMixin, Base):
    __tablename__ = "installation_shares"
    __table_args__ = (
        Index(
            "ix_installation_shares_installation_user", "installation_id", "user_id", unique=True
        ),
    )

    installation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("installations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    # Basis points of the meter's revenue (4500 = 45%).
    share_bp: Mapped[int]
