"""alerts and notifications: alerts, notifications, the fact followers' cursors and receipts,
and the reading rules' position per meter

Revision ID: 0015_alerts_notifications
Revises: 0014_billing
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gridex.core.db

revision: str = "0015_alerts_notifications"
down_revision: str | None = "0014_billing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = gridex.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_meter_watch",
        sa.Column("meter_id", sa.Uuid(), nullable=False),
        sa.Column("checked_until", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("meter_id", name=op.f("pk_alert_meter_watch")),
    )
    op.create_table(
        "fact_cursors",
        sa.Column("name", sa.String(length=48), nullable=False),
        sa.Column("position", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_fact_cursors")),
    )
    op.create_table(
        "fact_receipts",
        sa.Column("source", sa.String(length=48), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("source", "key", name=op.f("pk_fact_receipts")),
    )
    op.create_index("ix_fact_receipts_source_at", "fact_receipts", ["source", "at"], unique=False)

    op.create_table(
        "alerts",
        sa.Column(
            "type",
            sa.Enum(
                "device_offline",
                "consumption_spike",
                "generation_drop",
                "voltage_out_of_range",
                "reading_rejected",
                "low_balance",
                "settlement_shortfall",
                "chain_mismatch",
                "invoice_overdue",
                "seller_offline_before_gate",
                name="alerttype",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "severity",
            sa.Enum("info", "warning", "critical", name="severity", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "open", "acknowledged", "resolved", name="alertstatus", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column(
            "subject_kind",
            sa.Enum(
                "meter",
                "user",
                "region",
                "epoch",
                "invoice",
                name="subjectkind",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("open_key", sa.String(length=128), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("meter_id", sa.Uuid(), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("raised_at", _UTC, nullable=False),
        sa.Column("last_seen_at", _UTC, nullable=False),
        sa.Column("acknowledged_at", _UTC, nullable=True),
        sa.Column("acknowledged_by", sa.Uuid(), nullable=True),
        sa.Column("resolved_at", _UTC, nullable=True),
        sa.Column("resolved_by", sa.Uuid(), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alerts_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_meter_id"), "alerts", ["meter_id"], unique=False)
    op.create_index("ix_alerts_open_key", "alerts", ["open_key"], unique=True)
    op.create_index("ix_alerts_region_status", "alerts", ["region", "status"], unique=False)
    op.create_index("ix_alerts_status_type", "alerts", ["status", "type"], unique=False)
    op.create_index("ix_alerts_user_raised", "alerts", ["user_id", "raised_at"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.String(length=2000), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("read_at", _UTC, nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_user_created", "notifications", ["user_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_notifications_user_read", "notifications", ["user_id", "read_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_user_read", table_name="notifications")
    op.drop_index("ix_notifications_user_created", table_name="notifications")

    op.drop_table("notifications")
    op.drop_index("ix_alerts_user_raised", table_name="alerts")
    op.drop_index("ix_alerts_status_type", table_name="alerts")
    op.drop_index("ix_alerts_region_status", table_name="alerts")
    op.drop_index("ix_alerts_open_key", table_name="alerts")
    op.drop_index(op.f("ix_alerts_meter_id"), table_name="alerts")

    op.drop_table("alerts")
    op.drop_index("ix_fact_receipts_source_at", table_name="fact_receipts")

    op.drop_table("fact_receipts")
    op.drop_table("fact_cursors")
    op.drop_table("alert_meter_watch")
