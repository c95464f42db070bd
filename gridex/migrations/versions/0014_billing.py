"""Billing: invoices, credit notes, payments and disputes

Revision ID: 0014_billing
Revises: 0013_tariffs

Monthly invoices and credit notes with their lines (each traced to readings, trades or ledger
entries), payments from the wallet, disputes, and the per-region cycle row that generation locks.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gridex.core.db

revision: str = "0014_billing"
down_revision: str | None = "0013_tariffs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_cycles",
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_start", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("invoices", sa.Integer(), nullable=False),
        sa.Column("generated_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("generated_by_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("region", "period", name=op.f("pk_billing_cycles")),
    )
    op.create_table(
        "billing_invoices",
        sa.Column("number", sa.String(length=100), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("invoice", "credit_note", name="documentkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("corrects_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_start", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "issued",
                "paid",
                "overdue",
                "disputed",
                "void",
                name="invoicestatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("issued_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("tax_rate", sa.String(length=16), nullable=False),
        sa.Column("subtotal_micros", sa.BigInteger(), nullable=False),
        sa.Column("tax_micros", sa.BigInteger(), nullable=False),
        sa.Column("total_micros", sa.BigInteger(), nullable=False),
        sa.Column("settled_micros", sa.BigInteger(), nullable=False),
        sa.Column("paid_micros", sa.BigInteger(), nullable=False),
        sa.Column("corrected_micros", sa.BigInteger(), nullable=False),
        sa.Column("meters", sa.JSON(), nullable=False),
        sa.Column("daily", sa.JSON(), nullable=False),
        sa.Column("paid_at", gridex.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("overdue_at", gridex.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("voided_at", gridex.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["corrects_id"],
            ["billing_invoices.id"],
            name=op.f("fk_billing_invoices_corrects_id_billing_invoices"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_billing_invoices_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_invoices")),
        sa.UniqueConstraint("number", name=op.f("uq_billing_invoices_number")),
    )
    with op.batch_alter_table("billing_invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_billing_invoices_region_period", ["region", "period"], unique=False
        )
        batch_op.create_index(
            "ix_billing_invoices_status_due", ["status", "due_date"], unique=False
        )
        batch_op.create_index(
            "ix_billing_invoices_user_issued", ["user_id", "issued_at"], unique=False
        )
        batch_op.create_index(
            "ix_billing_invoices_user_region_period_seq",
            ["user_id", "region", "period", "sequence"],
            unique=True,
        )

    op.create_table(
        "billing_disputes",
        sa.Column("invoice_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column(
            "status",
            sa.Enum("open", "resolved", name="disputestatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.String(length=2000), nullable=True),
        sa.Column("credit_note_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", gridex.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_by_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["billing_invoices.id"],
            name=op.f("fk_billing_disputes_credit_note_id_billing_invoices"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["billing_invoices.id"],
            name=op.f("fk_billing_disputes_invoice_id_billing_invoices"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_billing_disputes_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_disputes")),
    )
    with op.batch_alter_table("billing_disputes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_disputes_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            "ix_billing_disputes_status_created", ["status", "created_at"], unique=False
        )

    op.create_table(
        "billing_invoice_lines",
        sa.Column("invoice_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "grid_import",
                "grid_export",
                "p2p_purchase",
                "p2p_sale",
                "fee",
                "shortfall",
                "feed_in_credit",
                "adjustment",
                "credit_note",
                name="linekind",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("band", sa.String(length=64), nullable=True),
        sa.Column("quantity_wh", sa.BigInteger(), nullable=True),
        sa.Column("unit_price_micros", sa.BigInteger(), nullable=True),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("trace", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["billing_invoices.id"],
            name=op.f("fk_billing_invoice_lines_invoice_id_billing_invoices"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_invoice_lines")),
    )
    with op.batch_alter_table("billing_invoice_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_billing_invoice_lines_invoice", ["invoice_id", "position"], unique=False
        )

    op.create_table(
        "billing_payments",
        sa.Column("invoice_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_billing_payments_entry_id_ledger_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["billing_invoices.id"],
            name=op.f("fk_billing_payments_invoice_id_billing_invoices"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_billing_payments_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_payments")),
    )
    with op.batch_alter_table("billing_payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_payments_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            "ix_billing_payments_user_created", ["user_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_payments", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_payments_user_created")
        batch_op.drop_index(batch_op.f("ix_billing_payments_invoice_id"))

    op.drop_table("billing_payments")
    with op.batch_alter_table("billing_invoice_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_invoice_lines_invoice")

    op.drop_table("billing_invoice_lines")
    with op.batch_alter_table("billing_disputes", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_disputes_status_created")
        batch_op.drop_index(batch_op.f("ix_billing_disputes_invoice_id"))

    op.drop_table("billing_disputes")
    with op.batch_alter_table("billing_invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_invoices_user_region_period_seq")
        batch_op.drop_index("ix_billing_invoices_user_issued")
        batch_op.drop_index("ix_billing_invoices_status_due")
        batch_op.drop_index("ix_billing_invoices_region_period")

    op.drop_table("billing_invoices")
    op.drop_table("billing_cycles")
