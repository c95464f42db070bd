"""Runtime configuration: settings admins change while Gridex runs, and their version

Revision ID: 0016_runtime_config
Revises: 0015_alerts_notifications
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import gridex.core.db

revision: str = "0016_runtime_config"
down_revision: str | None = "0015_alerts_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runtime_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_runtime_settings")),
    )
    version = op.create_table(
        "runtime_config_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runtime_config_version")),
    )
    op.execute(version.insert().values(id=1, version=0, updated_at=datetime.now(UTC)))


def downgrade() -> None:
    op.drop_table("runtime_config_version")
    op.drop_table("runtime_settings")
