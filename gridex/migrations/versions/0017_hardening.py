"""A region's meter approval policy

``auto`` (every existing region, and the default): a member's new meter is active at once.
``operator``: it is ``pending`` until an operator or admin approves it. Meter statuses are
stored as plain strings, so ``pending`` needs no change to the meters table.

Revision ID: 0017_hardening
Revises: 0016_runtime_config
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_hardening"
down_revision: str | None = "0016_runtime_config"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("regions") as batch_op:
        batch_op.add_column(
            sa.Column(
                "meter_approval",
                sa.Enum("auto", "operator", name="meterapproval", native_enum=False, length=16),
                server_default="auto",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("regions") as batch_op:
        batch_op.drop_column("meter_approval")
