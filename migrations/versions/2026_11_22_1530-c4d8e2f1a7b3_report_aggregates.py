"""report aggregates: battery_daily, oem_swap_daily, battery_recommendations

Swaps reach the aggregates through a trigger on swap_events, so the swaps domain needs no
knowledge of reports and every path that records a swap is counted. The trigger's rules are
repeated in app/reports/aggregates.py (rebuild), which a test keeps in agreement.

Revision ID: c4d8e2f1a7b3
Revises: b7e3c1d9a4f2
Create Date: 2026-11-22 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4d8e2f1a7b3"
down_revision: str | None = "b7e3c1d9a4f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SWAP_TRIGGER_FUNCTION = """
CREATE FUNCTION swap_events_to_aggregates() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    swap_day date := (NEW.started_at AT TIME ZONE 'UTC')::date;
    oem bigint;
BEGIN
    SELECT v.oem_id INTO oem FROM vehicles v WHERE v.vin = NEW.vin;
    IF oem IS NULL THEN
        SELECT b.oem_id INTO oem FROM batteries b WHERE b.serial = NEW.removed_battery_serial;
    END IF;
    INSERT INTO oem_swap_daily (oem_id, day, outcome, reason_code, swaps)
    VALUES (COALESCE(oem, 0), swap_day, NEW.outcome::text, COALESCE(NEW.reason_code, ''), 1)
    ON CONFLICT (oem_id, day, outcome, reason_code)
    DO UPDATE SET swaps = oem_swap_daily.swaps + 1;

    IF NEW.outcome = 'completed' THEN
        INSERT INTO battery_daily (battery_serial, day, swaps_out)
        SELECT b.serial, swap_day, 1 FROM batteries b WHERE b.id = NEW.removed_battery_id
        ON CONFLICT (battery_serial, day)
        DO UPDATE SET swaps_out = battery_daily.swaps_out + 1;
        INSERT INTO battery_daily (battery_serial, day, swaps_in)
        SELECT b.serial, swap_day, 1 FROM batteries b WHERE b.id = NEW.installed_battery_id
        ON CONFLICT (battery_serial, day)
        DO UPDATE SET swaps_in = battery_daily.swaps_in + 1;
    ELSIF NEW.reason_code IN ('BatteryDamaged', 'BatterySoHLow') THEN
        INSERT INTO battery_daily (battery_serial, day, health_rejections)
        SELECT b.serial, swap_day, 1 FROM batteries b
        WHERE b.serial = NEW.installed_battery_serial
        ON CONFLICT (battery_serial, day)
        DO UPDATE SET health_rejections = battery_daily.health_rejections + 1;
    END IF;
    RETURN NULL;
END
$$
"""


def _zero(name: str) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), server_default="0", nullable=False)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _nullable(name: str, type_: sa.types.TypeEngine[object]) -> sa.Column[object]:
    return sa.Column(name, type_, nullable=True)


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "battery_daily",
        sa.Column("battery_serial", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _count("charging_samples"),
        _count("charging_sessions"),
        _zero("energy_charged_kwh"),
        _zero("charged_ah"),
        _zero("temp_spread_sum_c"),
        _count("vehicle_samples"),
        _zero("energy_discharged_kwh"),
        _zero("discharged_ah"),
        _zero("seconds_above_45c"),
        _zero("seconds_below_0c"),
        _nullable("temp_max_c", sa.Double()),
        _count("health_records"),
        _nullable("health_first_ts", ts),
        _nullable("soh_first_pct", sa.Double()),
        _nullable("resistance_first_mohm", sa.Double()),
        _nullable("health_last_ts", ts),
        _nullable("soh_last_pct", sa.Double()),
        _nullable("resistance_last_mohm", sa.Double()),
        _nullable("cycles_last", sa.Double()),
        _nullable("soh_min_pct", sa.Double()),
        _nullable("soh_max_pct", sa.Double()),
        _nullable("cell_imbalance_max_mv", sa.Double()),
        _count("capacity_records"),
        _zero("capacity_sum_ah"),
        _nullable("capacity_last_ts", ts),
        _nullable("capacity_last_ah", sa.Double()),
        _nullable("capacity_last_kwh", sa.Double()),
        _zero("fit_days_sx"),
        _zero("fit_days_sxx"),
        _zero("fit_days_sxy"),
        _count("fit_cycles_n"),
        _zero("fit_cycles_sx"),
        _zero("fit_cycles_sy"),
        _zero("fit_cycles_sxx"),
        _zero("fit_cycles_sxy"),
        _count("swaps_in"),
        _count("swaps_out"),
        _count("health_rejections"),
        _nullable("last_seen_at", ts),
        sa.PrimaryKeyConstraint("battery_serial", "day", name=op.f("pk_battery_daily")),
    )
    op.create_index("ix_battery_daily_day", "battery_daily", ["day"], unique=False)
    op.create_table(
        "oem_swap_daily",
        sa.Column("oem_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        _count("swaps"),
        sa.PrimaryKeyConstraint(
            "oem_id", "day", "outcome", "reason_code", name=op.f("pk_oem_swap_daily")
        ),
    )
    op.create_table(
        "battery_recommendations",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("battery_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("cohort_median", sa.Double(), nullable=False),
        sa.Column("robust_z", sa.Double(), nullable=False),
        sa.Column("window_from", sa.Date(), nullable=False),
        sa.Column("window_to", sa.Date(), nullable=False),
        sa.Column("detected_at", ts, server_default=sa.text("now()"), nullable=False),
        sa.Column("resolved_at", ts, nullable=True),
        sa.ForeignKeyConstraint(
            ["battery_id"],
            ["batteries.id"],
            name=op.f("fk_battery_recommendations_battery_id_batteries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battery_recommendations")),
    )
    op.create_index(
        "uq_battery_recommendations_open",
        "battery_recommendations",
        ["battery_id", "kind"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.execute(SWAP_TRIGGER_FUNCTION)
    op.execute(
        "CREATE TRIGGER swap_events_to_aggregates AFTER INSERT ON swap_events"
        " FOR EACH ROW EXECUTE FUNCTION swap_events_to_aggregates()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER swap_events_to_aggregates ON swap_events")
    op.execute("DROP FUNCTION swap_events_to_aggregates()")
    op.drop_index("uq_battery_recommendations_open", table_name="battery_recommendations")
    op.drop_table("battery_recommendations")
    op.drop_table("oem_swap_daily")
    op.drop_index("ix_battery_daily_day", table_name="battery_daily")
    op.drop_table("battery_daily")
