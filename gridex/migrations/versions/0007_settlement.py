"""market settlement: the settlement record on epochs, participants' positions, handled
reading corrections

Revision ID: 0007_settlement
Revises: 0005_market
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gridex.core.db

revision: str = "0007_settlement"
down_revision: str | None = "0005_market"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EPOCH_COLUMNS = (
    ("settled_at", gridex.core.db.UTCDateTime(timezone=True)),
    ("settlement_paid_micros", sa.BigInteger()),
    ("settlement_fees_micros", sa.BigInteger()),
    ("settlement_shared_micros", sa.BigInteger()),
    ("settlement_charges_micros", sa.BigInteger()),
    ("settlement_credits_micros", sa.BigInteger()),
    ("settlement_import_price_micros", sa.BigInteger()),
    ("settlement_feed_in_price_micros", sa.BigInteger()),
    ("settlement_adjustments", sa.Integer()),
    ("settlement_adjusted_at", gridex.core.db.UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on both backends (no table rebuild on SQLite).
    for name, type_ in _EPOCH_COLUMNS:
        op.add_column("market_epochs", sa.Column(name, type_, nullable=True))
    op.create_index("ix_market_epochs_state_end", "market_epochs", ["state", "end"])

    op.create_table(
        "market_settlement_positions",
        sa.Column("epoch_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("sold_wh", sa.BigInteger(), nullable=False),
        sa.Column("bought_wh", sa.BigInteger(), nullable=False),
        sa.Column("exported_wh", sa.BigInteger(), nullable=False),
        sa.Column("imported_wh", sa.BigInteger(), nullable=False),
        sa.Column("received_micros", sa.BigInteger(), nullable=False),
        sa.Column("fees_micros", sa.BigInteger(), nullable=False),
        sa.Column("charged_micros", sa.BigInteger(), nullable=False),
        sa.Column("credited_micros", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["epoch_id"],
            ["market_epochs.id"],
            name=op.f("fk_market_settlement_positions_epoch_id_market_epochs"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_market_settlement_positions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("epoch_id", "user_id", name=op.f("pk_market_settlement_positions")),
    )
    op.create_table(
        "market_settlement_corrections",
        sa.Column("correction_id", sa.Uuid(), nullable=False),
        sa.Column("processed_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("adjusted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("correction_id", name=op.f("pk_market_settlement_corrections")),
    )


def downgrade() -> None:
    op.drop_table("market_settlement_corrections")
    op.drop_table("market_settlement_positions")
    op.drop_index("ix_market_epochs_state_end", table_name="market_epochs")
    with op.batch_alter_table("market_epochs") as batch_op:
        for name, _ in reversed(_EPOCH_COLUMNS):
            batch_op.drop_column(name)
