"""battery_monthly trigger: plan its statements for each firing

plpgsql caches the plan of a static statement for the life of the connection, planned for the
transition tables of its first firing. An ingest connection whose first UPDATE of
battery_daily touched a handful of rows kept a nested loop over the transition tables, and a
later statement updating thousands of battery-days then took seconds to minutes (quadratic).
EXECUTE plans each firing for the transition tables it has; planning costs well under a
millisecond per statement on battery_daily.

Revision ID: e7a1c4d2f9b6
Revises: d5e9f3a2b8c4
Create Date: 2026-11-22 17:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e7a1c4d2f9b6"
down_revision: str | None = "d5e9f3a2b8c4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The roll-up's statements as migration d5e9f3a2b8c4 built them (a copy: migrations are
# history, each keeps the SQL it ran).
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
    on_insert = _upsert(rollup_select("daily_new"))
    on_update = _upsert(delta_select())
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
    op.execute(trigger_function())


def downgrade() -> None:
    # d5e9f3a2b8c4's function: the same statements, static, so planned once per connection.
    op.execute(f"""
CREATE OR REPLACE FUNCTION battery_daily_to_monthly() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_upsert(rollup_select("daily_new"))};
    ELSE
        {_upsert(delta_select())};
    END IF;
    RETURN NULL;
END
$$
""")
