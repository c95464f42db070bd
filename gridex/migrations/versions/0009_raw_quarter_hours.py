"""Quarter-hours of 15-minute readings come from meter_readings: drop their rollup rows

A 15-minute reading is a whole quarter-hour bucket, and its meter_readings row (found by the
primary key (meter_id, timestamp)) holds what the rollup row held, so ingest no longer writes
quarter-hour rollup rows for it; they stay for readings shorter than 15 minutes. This deletes
the rows made of one 15-minute reading, and rebuilds from the shorter readings alone the rare
rows that also counted a 15-minute reading of the same quarter (overlapping intervals).
Downgrade adds the 15-minute readings back into the quarter-hour rollups.

Revision ID: 0009_raw_quarter_hours
Revises: 0008_ingest_perf
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_raw_quarter_hours"
down_revision: str | None = "0008_ingest_perf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps 15 minutes apart, and the larger/smaller of two values, per dialect. SQLite keeps
# datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text: strftime's %f has milliseconds, hence '000'.
_SQL = {
    "postgresql": {
        "later": "{} + interval '15 minutes'",
        "earlier": "{} - interval '15 minutes'",
        "greatest": "GREATEST",
        "least": "LEAST",
    },
    "sqlite": {
        "later": "strftime('%Y-%m-%d %H:%M:%f000', {}, '+15 minutes')",
        "earlier": "strftime('%Y-%m-%d %H:%M:%f000', {}, '-15 minutes')",
        "greatest": "max",
        "least": "min",
    },
}

# Per-reading contributions to a quarter-hour rollup row (power in W: Wh x 60 / minutes).
_POWER = "r.consumed_wh * (60 / r.interval_minutes)"


def _sql() -> dict[str, str]:
    return _SQL[op.get_bind().dialect.name]


def upgrade() -> None:
    sql = _sql()
    quarter_end = sql["later"].format("meter_rollups.bucket_start")
    has_quarter_reading = (
        "granularity = '15m' AND EXISTS (SELECT 1 FROM meter_readings r"
        " WHERE r.meter_id = meter_rollups.meter_id AND r.interval_minutes = 15"
        f' AND r."timestamp" = {quarter_end})'
    )
    op.execute(sa.text(f"DELETE FROM meter_rollups WHERE readings = 1 AND {has_quarter_reading}"))
    # What is left with a 15-minute reading in its quarter also counts shorter readings: rebuild
    # those rows from the shorter readings alone.
    shorter = (
        "FROM meter_readings r WHERE r.meter_id = meter_rollups.meter_id"
        ' AND r.interval_minutes < 15 AND r."timestamp" > meter_rollups.bucket_start'
        f' AND r."timestamp" <= {quarter_end}'
    )
    columns = {
        "consumed_wh": "sum(r.consumed_wh)",
        "produced_wh": "sum(r.produced_wh)",
        "readings": "count(*)",
        "peak_w": f"max({sql['greatest']}({_POWER}, COALESCE(r.peak_demand_w, 0)))",
        "min_w": f"min({_POWER})",
        "voltage_mv_sum": "COALESCE(sum(CAST(round(r.voltage * 1000) AS BIGINT)), 0)",
        "voltage_count": "count(r.voltage)",
        "current_ma_sum": 'COALESCE(sum(CAST(round(r."current" * 1000) AS BIGINT)), 0)',
        "current_count": 'count(r."current")',
    }
    rebuilt = ", ".join(f"{name} = (SELECT {value} {shorter})" for name, value in columns.items())
    op.execute(sa.text(f"UPDATE meter_rollups SET {rebuilt} WHERE {has_quarter_reading}"))


def downgrade() -> None:
    sql = _sql()
    greatest, least = sql["greatest"], sql["least"]
    op.execute(
        sa.text(
            f"""
INSERT INTO meter_rollups (
    meter_id, granularity, bucket_start, consumed_wh, produced_wh, readings, peak_w, min_w,
    voltage_mv_sum, voltage_count, current_ma_sum, current_count
)
SELECT r.meter_id, '15m', {sql["earlier"].format('r."timestamp"')}, r.consumed_wh,
       r.produced_wh, 1, {greatest}({_POWER}, COALESCE(r.peak_demand_w, 0)), {_POWER},
       COALESCE(CAST(round(r.voltage * 1000) AS BIGINT), 0),
       CASE WHEN r.voltage IS NULL THEN 0 ELSE 1 END,
       COALESCE(CAST(round(r."current" * 1000) AS BIGINT), 0),
       CASE WHEN r."current" IS NULL THEN 0 ELSE 1 END
FROM meter_readings r WHERE r.interval_minutes = 15
ON CONFLICT (meter_id, granularity, bucket_start) DO UPDATE SET
    consumed_wh = meter_rollups.consumed_wh + excluded.consumed_wh,
    produced_wh = meter_rollups.produced_wh + excluded.produced_wh,
    readings = meter_rollups.readings + excluded.readings,
    peak_w = {greatest}(meter_rollups.peak_w, excluded.peak_w),
    min_w = {least}(meter_rollups.min_w, excluded.min_w),
    voltage_mv_sum = meter_rollups.voltage_mv_sum + excluded.voltage_mv_sum,
    voltage_count = meter_rollups.voltage_count + excluded.voltage_count,
    current_ma_sum = meter_rollups.current_ma_sum + excluded.current_ma_sum,
    current_count = meter_rollups.current_count + excluded.current_count
"""
        )
    )
