"""battery_monthly roll-up of battery_daily; report_anomaly_snapshots

A report over a year reads about a dozen monthly rows per battery (plus the edge days of
partial months from battery_daily) instead of 365 daily ones. The roll-up is kept by
statement-level triggers on battery_daily, so the ingest, the swap trigger and any other
writer of battery_daily keep it current without knowing about it: one extra aggregate
statement per statement on battery_daily. Deletes are not followed: the only deleter,
rebuild_aggregates, recomputes the affected months itself.

report_anomaly_snapshots caches the fleet summary's anomalies and energy per window with a
fingerprint of the data they came from (app/reports/service.py window_snapshot).

Revision ID: d5e9f3a2b8c4
Revises: c4d8e2f1a7b3
Create Date: 2026-11-22 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d5e9f3a2b8c4"
down_revision: str | None = "c4d8e2f1a7b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rules of app/rollups (a test compares trigger-kept rows with a recompute).
INT_SUMS = (
    "charging_samples", "charging_sessions", "capacity_records", "fit_cycles_n",
    "swaps_in", "swaps_out", "health_rejections", "health_records",
)  # fmt: skip
FLOAT_SUMS = (
    "energy_charged_kwh", "charged_ah", "temp_spread_sum_c", "energy_discharged_kwh",
    "discharged_ah", "seconds_above_45c", "seconds_below_0c", "capacity_sum_ah",
    "fit_days_sx", "fit_days_sxx", "fit_days_sxy", "fit_cycles_sx", "fit_cycles_sy",
    "fit_cycles_sxx", "fit_cycles_sxy",
)  # fmt: skip
# Least-squares sums of cell_imbalance_max_mv over x = day - 2020-01-01, days with a value.
IMB_X = "(d.day - DATE '2020-01-01')::float8"
IMB_TERMS = {
    "imbalance_n": "CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE 1 END",
    "imbalance_sx": f"CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE {IMB_X} END",
    "imbalance_sy": "COALESCE(d.cell_imbalance_max_mv, 0)",
    "imbalance_sxx": f"CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE {IMB_X}^2 END",
    "imbalance_sxy": f"COALESCE(d.cell_imbalance_max_mv * {IMB_X}, 0)",
}
ADDED = ("days", *INT_SUMS, *FLOAT_SUMS, *IMB_TERMS)
COLUMNS = (*ADDED, "temp_max_c", "last_seen_at", "first_day")


def _merge() -> str:
    parts = [f"{c} = battery_monthly.{c} + EXCLUDED.{c}" for c in ADDED]
    parts += [
        "temp_max_c = GREATEST(battery_monthly.temp_max_c, EXCLUDED.temp_max_c)",
        "last_seen_at = GREATEST(battery_monthly.last_seen_at, EXCLUDED.last_seen_at)",
        "first_day = LEAST(battery_monthly.first_day, EXCLUDED.first_day)",
    ]
    return ", ".join(parts)


def _upsert(select: str) -> str:
    return (
        f"INSERT INTO battery_monthly (battery_serial, month, {', '.join(COLUMNS)}) {select}"
        f" ON CONFLICT (battery_serial, month) DO UPDATE SET {_merge()}"
    )


def _sums(prefix: str) -> list[str]:
    terms = {c: f"{prefix}.{c}" for c in (*INT_SUMS, *FLOAT_SUMS)}
    terms |= {k: v.replace("d.", f"{prefix}.") for k, v in IMB_TERMS.items()}
    return [f"{c}: {t}" for c, t in terms.items()]


def rollup_select(source: str, where: str = "") -> str:
    """battery_monthly rows summed from battery_daily rows `d` of `source`."""
    sums = [f"sum({t.split(': ', 1)[1]})" for t in _sums("d")]
    return (
        "SELECT d.battery_serial, date_trunc('month', d.day)::date, count(*), "
        + ", ".join(sums)
        + ", max(d.temp_max_c), max(d.last_seen_at), min(d.day)"
        + f" FROM {source} d {where} GROUP BY 1, 2"
    )


def delta_select() -> str:
    """What an UPDATE of battery_daily rows added: new minus old, joined on the key."""
    new = [t.split(": ", 1)[1] for t in _sums("n")]
    old = [t.split(": ", 1)[1] for t in _sums("o")]
    diffs = [f"sum(({a}) - ({b}))" for a, b in zip(new, old, strict=True)]
    return (
        "SELECT n.battery_serial, date_trunc('month', n.day)::date, 0, "
        + ", ".join(diffs)
        + ", max(n.temp_max_c), max(n.last_seen_at), min(n.day)"
        + " FROM daily_new n JOIN daily_old o USING (battery_serial, day) GROUP BY 1, 2"
    )


def trigger_function() -> str:
    return f"""
CREATE FUNCTION battery_daily_to_monthly() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_upsert(rollup_select("daily_new"))};
    ELSE
        {_upsert(delta_select())};
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    columns: list[sa.Column[object]] = [
        sa.Column("battery_serial", sa.String(64), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("days", sa.Integer(), server_default="0", nullable=False),
    ]
    columns += [sa.Column(c, sa.Integer(), server_default="0", nullable=False) for c in INT_SUMS]
    columns += [sa.Column(c, sa.Double(), server_default="0", nullable=False) for c in FLOAT_SUMS]
    columns.append(sa.Column("imbalance_n", sa.Integer(), server_default="0", nullable=False))
    columns += [
        sa.Column(c, sa.Double(), server_default="0", nullable=False)
        for c in IMB_TERMS
        if c != "imbalance_n"
    ]
    columns += [
        sa.Column("temp_max_c", sa.Double(), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_day", sa.Date(), nullable=True),
    ]
    op.create_table(
        "battery_monthly",
        *columns,
        sa.PrimaryKeyConstraint("battery_serial", "month"),
    )
    op.execute(_upsert(rollup_select("battery_daily")))
    op.create_table(
        "report_anomaly_snapshots",
        sa.Column("window_from", sa.Date(), nullable=False),
        sa.Column("window_to", sa.Date(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("anomalies", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("energy_by_oem", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("window_from", "window_to"),
    )
    op.execute(trigger_function())
    op.execute(
        "CREATE TRIGGER battery_daily_monthly_insert AFTER INSERT ON battery_daily"
        " REFERENCING NEW TABLE AS daily_new"
        " FOR EACH STATEMENT EXECUTE FUNCTION battery_daily_to_monthly()"
    )
    op.execute(
        "CREATE TRIGGER battery_daily_monthly_update AFTER UPDATE ON battery_daily"
        " REFERENCING OLD TABLE AS daily_old NEW TABLE AS daily_new"
        " FOR EACH STATEMENT EXECUTE FUNCTION battery_daily_to_monthly()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER battery_daily_monthly_update ON battery_daily")
    op.execute("DROP TRIGGER battery_daily_monthly_insert ON battery_daily")
    op.execute("DROP FUNCTION battery_daily_to_monthly()")
    op.drop_table("report_anomaly_snapshots")
    op.drop_table("battery_monthly")
