"""capacity fits: the sum of squared capacities, for the fits' standard errors

Also: battery_recommendations.robust_z may be null (a battery below the SoH floor is
recommended by the fleet's rule, not by a cohort statistic).

A least-squares slope's standard error needs the residuals, which the sums n, x, y, x², xy
cannot give: battery_daily and battery_monthly gain the sum of y² of both capacity fits
(over days: fit_days_syy; over cycles, records with a known cycle count: fit_cycles_syy).
The trigger that keeps battery_monthly in step is replaced by one that also adds them, and
then the existing battery-days are filled in from capacity_records (each UPDATE adds its
difference to the month through that trigger).

Revision ID: b8f4d2a6c9e1
Revises: b7e2c9d4a1f3
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8f4d2a6c9e1"
down_revision: str | None = "b7e2c9d4a1f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = ("fit_days_syy", "fit_cycles_syy")

# The roll-up's statements as migration e7a1c4d2f9b6 built them, with the new sums (a copy:
# migrations are history, each keeps the SQL it ran).
INT_SUMS = (
    "charging_samples", "charging_sessions", "capacity_records", "fit_cycles_n",
    "swaps_in", "swaps_out", "health_rejections", "health_records",
)  # fmt: skip
OLD_FLOAT_SUMS = (
    "energy_charged_kwh", "charged_ah", "temp_spread_sum_c", "energy_discharged_kwh",
    "discharged_ah", "seconds_above_45c", "seconds_below_0c", "capacity_sum_ah",
    "fit_days_sx", "fit_days_sxx", "fit_days_sxy", "fit_cycles_sx", "fit_cycles_sy",
    "fit_cycles_sxx", "fit_cycles_sxy",
)  # fmt: skip
IMB_X = "(d.day - DATE '2020-01-01')::float8"
IMB_TERMS = {
    "imbalance_n": "CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE 1 END",
    "imbalance_sx": f"CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE {IMB_X} END",
    "imbalance_sy": "COALESCE(d.cell_imbalance_max_mv, 0)",
    "imbalance_sxx": f"CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE {IMB_X}^2 END",
    "imbalance_sxy": f"COALESCE(d.cell_imbalance_max_mv * {IMB_X}, 0)",
}

# Cycles at a capacity measurement, as app/rollups/rules.py's CAPACITY source had it.
BACKFILL = """
UPDATE battery_daily d SET fit_days_syy = c.syy, fit_cycles_syy = c.cyy
FROM (
    SELECT t.battery_serial, (t.ts AT TIME ZONE 'UTC')::date AS day,
        sum(t.capacity_ah * t.capacity_ah) AS syy,
        COALESCE(sum(CASE WHEN (
            SELECT h.cycle_count FROM health_records h
            WHERE h.battery_serial = t.battery_serial AND h.ts <= t.ts
              AND h.ts > t.ts - INTERVAL '30 days'
            ORDER BY h.ts DESC LIMIT 1
        ) IS NOT NULL THEN t.capacity_ah * t.capacity_ah END), 0) AS cyy
    FROM capacity_records t
    GROUP BY 1, 2
) c
WHERE d.battery_serial = c.battery_serial AND d.day = c.day
"""


def trigger_function(float_sums: tuple[str, ...]) -> str:
    added = ("days", *INT_SUMS, *float_sums, *IMB_TERMS)
    columns = (*added, "temp_max_c", "last_seen_at", "first_day")
    merge = ", ".join(
        [f"{c} = battery_monthly.{c} + EXCLUDED.{c}" for c in added]
        + [
            "temp_max_c = GREATEST(battery_monthly.temp_max_c, EXCLUDED.temp_max_c)",
            "last_seen_at = GREATEST(battery_monthly.last_seen_at, EXCLUDED.last_seen_at)",
            "first_day = LEAST(battery_monthly.first_day, EXCLUDED.first_day)",
        ]
    )

    def upsert(select: str) -> str:
        return (
            f"INSERT INTO battery_monthly (battery_serial, month, {', '.join(columns)}) {select}"
            f" ON CONFLICT (battery_serial, month) DO UPDATE SET {merge}"
        )

    def terms(prefix: str) -> list[str]:
        plain = [f"{prefix}.{c}" for c in (*INT_SUMS, *float_sums)]
        return plain + [v.replace("d.", f"{prefix}.") for v in IMB_TERMS.values()]

    on_insert = upsert(
        "SELECT d.battery_serial, date_trunc('month', d.day)::date, count(*), "
        + ", ".join(f"sum({t})" for t in terms("d"))
        + ", max(d.temp_max_c), max(d.last_seen_at), min(d.day)"
        + " FROM daily_new d GROUP BY 1, 2"
    )
    on_update = upsert(
        "SELECT n.battery_serial, date_trunc('month', n.day)::date, 0, "
        + ", ".join(f"sum(({a}) - ({b}))" for a, b in zip(terms("n"), terms("o"), strict=True))
        + ", max(n.temp_max_c), max(n.last_seen_at), min(n.day)"
        + " FROM daily_new n JOIN daily_old o USING (battery_serial, day) GROUP BY 1, 2"
    )
    return f"""
CREATE OR REPLACE FUNCTION battery_daily_to_monthly() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE $sql${on_insert}$sql$;
    ELSE
        EXECUTE $sql${on_update}$sql$;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    for table in ("battery_daily", "battery_monthly"):
        for column in NEW:
            op.add_column(
                table,
                sa.Column(column, sa.Double(), server_default=sa.text("0"), nullable=False),
            )
    op.execute(trigger_function((*OLD_FLOAT_SUMS, *NEW)))
    op.execute(BACKFILL)
    # A battery below the SoH floor is recommended by the fleet's rule, with no cohort z.
    op.alter_column("battery_recommendations", "robust_z", nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM battery_recommendations WHERE robust_z IS NULL")
    op.alter_column("battery_recommendations", "robust_z", nullable=False)
    op.execute(trigger_function(OLD_FLOAT_SUMS))
    for table in ("battery_monthly", "battery_daily"):
        for column in NEW:
            op.drop_column(table, column)
