"""Tariffs: per-region schedules with time-of-use bands, and admin overrides

Revision ID: 0013_tariffs
Revises: 0012_order_owner_epoch_index
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gridex.core.db

revision: str = "0013_tariffs"
down_revision: str | None = "0012_order_owner_epoch_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tariff_schedules",
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("effective_from", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("import_price_micros", sa.BigInteger(), nullable=False),
        sa.Column("feed_in_price_micros", sa.BigInteger(), nullable=False),
        sa.Column("bands", sa.JSON(), nullable=False),
        sa.Column("holidays", sa.JSON(), nullable=False),
        sa.Column("created_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["region"], ["regions.name"], name=op.f("fk_tariff_schedules_region_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariff_schedules")),
        sa.UniqueConstraint("region", "effective_from", name=op.f("uq_tariff_schedules_region")),
    )
    op.create_table(
        "tariff_overrides",
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("import_price_micros", sa.BigInteger(), nullable=True),
        sa.Column("feed_in_price_micros", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("starts_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", gridex.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("cancelled_at", gridex.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["region"], ["regions.name"], name=op.f("fk_tariff_overrides_region_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariff_overrides")),
    )
    op.create_index(
        "ix_tariff_overrides_region_window",
        "tariff_overrides",
        ["region", "starts_at", "ends_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_tariff_overrides_region_window", table_name="tariff_overrides")
    op.drop_table("tariff_overrides")
    op.drop_table("tariff_schedules")
