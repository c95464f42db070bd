"""Payment intents, processed webhook events, refunds and withdrawals (amounts in micros)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class PaymentStatus(enum.StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class WithdrawalStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class PaymentIntent(IdMixin, Base):
    """A top-up: created pending, credited once when the provider's signed webhook says so."""

    __tablename__ = "payment_intents"
    __table_args__ = (Index("ix_payment_intents_user_created", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    provider: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str] = mapped_column(String(100), unique=True)
    client_secret: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(8))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    # Refunded so far; never above amount_micros (conditional update in the refund).
    refunded_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=PaymentStatus.pending.value)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class PaymentEvent(Base):
    """A webhook event already processed: its id makes every retry or replay a no-op."""

    __tablename__ = "payment_events"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    intent_id: Mapped[uuid.UUID | None]
    outcome: Mapped[str] = mapped_column(String(16))  # credited | failed | ignored
    received_at: Mapped[datetime]


class Refund(IdMixin, Base):
    __tablename__ = "payment_refunds"

    intent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_intents.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(500))
    provider_ref: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]


class Withdrawal(IdMixin, Base):
    """A payout request: the amount waits in the user's ``reserved`` until an operator decides."""

    __tablename__ = "withdrawals"
    __table_args__ = (Index("ix_withdrawals_user_requested", "user_id", "requested_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    destination: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(
        String(16), default=WithdrawalStatus.pending.value, index=True
    )
    provider_ref: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(500))
    requested_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None]
