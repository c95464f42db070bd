"""installations.meter_id references meters

Merges the meters (0003) and ledger (0004) branches: an installation's revenue shares now belong
to a meter that exists. Meters are only ever soft-deleted, so the key never blocks a deletion.

An installation whose meter does not exist stops the upgrade with the list of them (nothing is
changed): fix or remove those rows first; the migration never deletes revenue shares.

SQLite adds the key by copying the table (batch mode). Dropping the old table deletes its rows
first, which would cascade to ``installation_shares`` (foreign keys are on, and a migration runs
in a transaction, where they cannot be turned off): the shares are kept aside and put back.

Revision ID: 0006_installation_meter_fk
Revises: 0003, 0004
Create Date: 2026-11-24 04:50:00.000000
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_installation_meter_fk"
down_revision: str | Sequence[str] | None = ("0003", "0004")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK_NAME = "fk_installations_meter_id_meters"
_SHARES_COPY = "_installation_shares_kept"


def _refuse_orphans() -> None:
    orphans = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT i.id, i.meter_id FROM installations i "
                "LEFT JOIN meters m ON m.id = i.meter_id WHERE m.id IS NULL"
            )
        )
        .all()
    )
    if orphans:
        listed = ", ".join(
            f"installation {uuid.UUID(str(i))} (meter {uuid.UUID(str(m))})" for i, m in orphans
        )
        raise RuntimeError(
            f"{len(orphans)} installation(s) name a meter that does not exist: {listed}. "
            "Correct their meter_id or delete them, then upgrade again."
        )


def _rebuild(change: str) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute(f"CREATE TEMP TABLE {_SHARES_COPY} AS SELECT * FROM installation_shares")
    with op.batch_alter_table("installations", schema=None) as batch_op:
        if change == "add":
            batch_op.create_foreign_key(FK_NAME, "meters", ["meter_id"], ["id"])
        else:
            batch_op.drop_constraint(FK_NAME, type_="foreignkey")
    if sqlite:
        op.execute(
            f"INSERT INTO installation_shares SELECT * FROM {_SHARES_COPY} "
            "WHERE id NOT IN (SELECT id FROM installation_shares)"
        )
        op.execute(f"DROP TABLE {_SHARES_COPY}")


def upgrade() -> None:
    _refuse_orphans()
    _rebuild("add")


def downgrade() -> None:
    _rebuild("drop")
