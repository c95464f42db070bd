"""Billing tables: invoices (and credit notes) with their lines, payments and disputes.

Money columns are integer micros of the deployment currency (``*_micros``; a credit is negative),
energy columns integer watt-hours (``*_wh``), prices micros per kWh. An invoice covers one
calendar month (``period``, ``yyyy-mm``) in its region's local time, ``[period_start,
period_end)`` in UTC. Issued rows are never edited except for their payment state (``status``,
``paid_micros``, ``corrected_micros`` and the time stamps of those changes): a later correction is
a new document of kind ``credit_note`` that names the invoice it corrects.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Enum, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class InvoiceStatus(enum.StrEnum):
    issued = "issued"
    paid = "paid"
    overdue = "overdue"  # unpaid past its due date (a durable change: ``overdue_at``)
    disputed = "disputed"
    void = "void"  # fully cancelled by a credit note


class DocumentKind(enum.StrEnum):
    invoice = "invoice"
    credit_note = "credit_note"


class LineKind(enum.StrEnum):
    grid_import = "grid_import"
    grid_export = "grid_export"
    p2p_purchase = "p2p_purchase"
    p2p_sale = "p2p_sale"
    fee = "fee"
    shortfall = "shortfall"
    feed_in_credit = "feed_in_credit"
    adjustment = "adjustment"
    credit_note = "credit_note"


# Lines whose money already moved through the wallet when the market settled each epoch; the
# invoice shows them for the whole picture and does not ask for them again.
SETTLED_KINDS = frozenset(
    {
        LineKind.p2p_purchase,
        LineKind.p2p_sale,
        LineKind.fee,
        LineKind.shortfall,
        LineKind.feed_in_credit,
        LineKind.adjustment,
    }
)


class BillingCycle(Base):
    """One generated month of one region: the row generation locks, so that two runs at once
    number invoices one after the other."""

    __tablename__ = "billing_cycles"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)  # yyyy-mm
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    invoices: Mapped[int] = mapped_column(Integer, default=0)  # documents numbered so far
    generated_at: Mapped[datetime]
    generated_by_id: Mapped[uuid.UUID | None]


class Invoice(IdMixin, Base):
    __tablename__ = "billing_invoices"
    __table_args__ = (
        # One invoice per user, region and month; its corrections follow with sequence 1, 2...
        Index(
            "ix_billing_invoices_user_region_period_seq",
            "user_id",
            "region",
            "period",
            "sequence",
            unique=True,
        ),
        Index("ix_billing_invoices_user_issued", "user_id", "issued_at"),
        Index("ix_billing_invoices_status_due", "status", "due_date"),
        Index("ix_billing_invoices_region_period", "region", "period"),
    )

    number: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[DocumentKind] = mapped_column(Enum(DocumentKind, native_enum=False, length=16))
    sequence: Mapped[int] = mapped_column(Integer, default=0)  # 0: the invoice itself
    corrects_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("billing_invoices.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    region: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(7))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[InvoiceStatus] = mapped_column(Enum(InvoiceStatus, native_enum=False, length=16))
    issued_at: Mapped[datetime]
    due_date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(8))
    tax_rate: Mapped[str] = mapped_column(String(16))  # as configured, e.g. "0.200000"
    subtotal_micros: Mapped[int] = mapped_column(BigInteger)  # sum of the lines
    tax_micros: Mapped[int] = mapped_column(BigInteger)
    total_micros: Mapped[int] = mapped_column(BigInteger)  # subtotal + tax
    # Of the total: what the market already settled through the wallet (SETTLED_KINDS lines).
    settled_micros: Mapped[int] = mapped_column(BigInteger)
    paid_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # paid towards it since
    # The signed change credit notes made to what is due (< 0 for a credit).
    corrected_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # The customer's meters in the region and the month's daily energy, for the document.
    meters: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    daily: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)  # [day, in Wh, out Wh]
    paid_at: Mapped[datetime | None]
    overdue_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]

    @property
    def amount_due_micros(self) -> int:
        """What the customer still owes (< 0: what the platform owes the customer)."""
        return self.total_micros - self.settled_micros - self.paid_micros + self.corrected_micros


class InvoiceLine(IdMixin, Base):
    """One line. ``trace`` says where it comes from: the meters and UTC windows whose readings
    it sums, the trade ids, or the ledger entry ids."""

    __tablename__ = "billing_invoice_lines"
    __table_args__ = (Index("ix_billing_invoice_lines_invoice", "invoice_id", "position"),)

    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("billing_invoices.id"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[LineKind] = mapped_column(Enum(LineKind, native_enum=False, length=16))
    description: Mapped[str] = mapped_column(String(200))
    band: Mapped[str | None] = mapped_column(String(64))
    quantity_wh: Mapped[int | None] = mapped_column(BigInteger)
    unit_price_micros: Mapped[int | None] = mapped_column(BigInteger)  # per kWh
    amount_micros: Mapped[int] = mapped_column(BigInteger)  # signed: credits negative
    trace: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class InvoicePayment(IdMixin, Base):
    """Money moved for an invoice: the customer's payment from the wallet (``amount`` > 0), or
    the platform's payout of a credit balance to the wallet (< 0); ``entry_id`` is the ledger's."""

    __tablename__ = "billing_payments"
    __table_args__ = (Index("ix_billing_payments_user_created", "user_id", "created_at"),)

    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("billing_invoices.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(16))  # wallet | credit_payout
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime]


class DisputeStatus(enum.StrEnum):
    open = "open"
    resolved = "resolved"


class Dispute(IdMixin, Base):
    __tablename__ = "billing_disputes"
    __table_args__ = (Index("ix_billing_disputes_status_created", "status", "created_at"),)

    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("billing_invoices.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(2000))
    status: Mapped[DisputeStatus] = mapped_column(Enum(DisputeStatus, native_enum=False, length=16))
    # The invoice's status before the dispute, restored (or recomputed) on resolution.
    previous_status: Mapped[str] = mapped_column(String(16))
    resolution: Mapped[str | None] = mapped_column(String(2000))
    credit_note_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("billing_invoices.id"))
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolved_by_id: Mapped[uuid.UUID | None]
