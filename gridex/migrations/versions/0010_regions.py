"""Regions become objects that admins create

Every region already named by a user, a meter, market settings, an epoch or an order becomes a
row (time zone UTC), so existing data stays valid; from now on only existing regions may be
named. The deployment's GRIDEX_REGIONS are created when Gridex starts.

Revision ID: 0010_regions
Revises: 0009_raw_quarter_hours
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gridex.core.db

revision: str = "0010_regions"
down_revision: str | None = "0009_raw_quarter_hours"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAMED_BY = (
    ("users", "region"),
    ("meters", "region"),
    ("market_region_settings", "region"),
    ("market_epochs", "region"),
    ("market_orders", "region"),
)


def upgrade() -> None:
    op.create_table(
        "regions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("created_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_regions")),
    )
    named = " UNION ".join(
        f"SELECT {column} AS name FROM {table} WHERE {column} IS NOT NULL"
        for table, column in _NAMED_BY
    )
    op.execute(
        "INSERT INTO regions (name, timezone, created_at) "
        f"SELECT name, 'UTC', CURRENT_TIMESTAMP FROM ({named}) AS named"
    )


def downgrade() -> None:
    op.drop_table("regions")
