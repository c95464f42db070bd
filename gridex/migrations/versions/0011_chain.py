"""chain mirror: platform records, custodial wallets, the outbox and the mirror's bookkeeping

Revision ID: 0011_chain
Revises: 0010_regions
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gridex.core.db

revision: str = "0011_chain"
down_revision: str | None = "0010_regions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = gridex.core.db.UTCDateTime(timezone=True)
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chain_records",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_chain_records")),
    )
    op.create_table(
        "chain_wallets",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("sealed_seed", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chain_wallets_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_chain_wallets")),
        sa.UniqueConstraint("address", name=op.f("uq_chain_wallets_address")),
    )
    op.create_table(
        "chain_transactions",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("instructions", sa.LargeBinary(), nullable=False),
        sa.Column("signers", sa.String(length=2000), nullable=False),
        sa.Column("epoch_id", sa.Uuid(), nullable=True),
        sa.Column("memo", sa.String(length=200), nullable=True),
        sa.Column("transfers", sa.Integer(), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=True),
        sa.Column("signed", sa.LargeBinary(), nullable=True),
        sa.Column("last_valid_height", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("compute_units", sa.BigInteger(), nullable=True),
        sa.Column("next_attempt_at", _UTC, nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("submitted_at", _UTC, nullable=True),
        sa.Column("confirmed_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_transactions")),
        sa.UniqueConstraint("signature", name=op.f("uq_chain_transactions_signature")),
    )
    op.create_index("ix_chain_transactions_status_id", "chain_transactions", ["status", "id"])
    op.create_index("ix_chain_transactions_epoch", "chain_transactions", ["epoch_id"])
    op.create_table(
        "chain_transaction_users",
        sa.Column("transaction_id", _SEQ, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["chain_transactions.id"],
            name=op.f("fk_chain_transaction_users_transaction_id_chain_transactions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "transaction_id", "user_id", name=op.f("pk_chain_transaction_users")
        ),
    )
    op.create_index(
        "ix_chain_transaction_users_user_tx",
        "chain_transaction_users",
        ["user_id", "transaction_id"],
    )
    op.create_table(
        "chain_holders",
        sa.Column("holder", sa.String(length=40), nullable=False),
        sa.Column("ledger_micros", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("holder", name=op.f("pk_chain_holders")),
    )
    op.create_table(
        "chain_mirrored_entries",
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("entry_created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_chain_mirrored_entries")),
    )
    op.create_index(
        op.f("ix_chain_mirrored_entries_entry_created_at"),
        "chain_mirrored_entries",
        ["entry_created_at"],
    )
    op.create_table(
        "chain_mismatches",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("ledger_micros", sa.BigInteger(), nullable=False),
        sa.Column("chain_micros", sa.BigInteger(), nullable=False),
        sa.Column("found_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_mismatches")),
    )
    op.create_index(op.f("ix_chain_mismatches_found_at"), "chain_mismatches", ["found_at"])


def downgrade() -> None:
    op.drop_table("chain_mismatches")
    op.drop_table("chain_mirrored_entries")
    op.drop_table("chain_holders")
    op.drop_table("chain_transaction_users")
    op.drop_table("chain_transactions")
    op.drop_table("chain_wallets")
    op.drop_table("chain_records")
