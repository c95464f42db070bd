"""meter_rollups without a foreign key to meters

Every ingest upserts one rollup row per touched bucket (four granularities), and a foreign key
check per row costs as much as the upsert itself. Rollups are written only by ingest and
corrections, for meters they have just loaded, and meters are never deleted (only soft-deleted),
so the key adds no protection there; readings keep theirs.

Revision ID: 0008_ingest_perf
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_ingest_perf"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("meter_rollups", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_meter_rollups_meter_id_meters"), type_="foreignkey")


def downgrade() -> None:
    # Rollups of meters that no longer exist would block the key; there are none to drop
    # unless meters were deleted by hand.
    op.execute(sa.text("DELETE FROM meter_rollups WHERE meter_id NOT IN (SELECT id FROM meters)"))
    with op.batch_alter_table("meter_rollups", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_meter_rollups_meter_id_meters"),
            "meters",
            ["meter_id"],
            ["id"],
            ondelete="CASCADE",
        )
