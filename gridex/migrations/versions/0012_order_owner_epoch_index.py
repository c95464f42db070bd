"""An index of orders by user, epoch and side

The self-trade and export-capacity entry rules look at the user's own resting orders in the
order's epoch; without this index each new order scanned every resting order of the epoch.

Revision ID: 0012_order_owner_epoch_index
Revises: 0011_chain
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_order_owner_epoch_index"
down_revision: str | None = "0011_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_market_orders_user_epoch_side",
        "market_orders",
        ["user_id", "epoch_id", "side", "effective_price_micros"],
    )


def downgrade() -> None:
    op.drop_index("ix_market_orders_user_epoch_side", table_name="market_orders")
