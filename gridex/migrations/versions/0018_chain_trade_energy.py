"""chain mirror: the energy delivered per trade (re-settlement moves the difference), and the
settlement lane of each outbox transaction (its fee payer)

Revision ID: 0018_chain_trade_energy
Revises: 0017_hardening
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_chain_trade_energy"
down_revision: str | None = "0017_hardening"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_trade_energy",
        sa.Column("trade_id", sa.Uuid(), nullable=False),
        sa.Column("wh", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trade_id", name=op.f("pk_chain_trade_energy")),
    )
    with op.batch_alter_table("chain_transactions") as batch:
        batch.add_column(sa.Column("lane", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chain_transactions") as batch:
        batch.drop_column("lane")
    op.drop_table("chain_trade_energy")
