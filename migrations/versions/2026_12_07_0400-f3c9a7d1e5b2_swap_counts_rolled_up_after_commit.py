"""swap counts rolled up after commit: the swap_events trigger only queues the swap

The trigger of migration c4d8e2f1a7b3 added 1 to the OEM's oem_swap_daily row of the day and
to both batteries' battery_daily rows (whose triggers update battery_monthly) inside every
swap's transaction. Every swap of one OEM on one day updated the same row, so each waited for
the previous one's commit: 60-90 swaps/s for the whole network, against 350-440/s without
the trigger (bench/bench_swaps.py). Now the trigger appends the swap's id to
swap_rollup_queue (no index, nothing shared to update), and app/reports/aggregates.py's
roll_up_swaps adds queued swaps to the aggregates in batches after their commit; readers of
oem_swap_daily add what is still queued, so the counts stay exact.

Existing swaps are already counted in the aggregates: the queue starts empty. The downgrade
adds what is queued (the rules of the old trigger, as one statement per table) before it
restores the old trigger.

Revision ID: f3c9a7d1e5b2
Revises: e7a1c4d2f9b6
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f3c9a7d1e5b2"
down_revision: str | None = "e7a1c4d2f9b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION swap_events_to_aggregates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO swap_rollup_queue (swap_id) VALUES (NEW.id);
    RETURN NULL;
END
$$
"""

# A frozen copy of the roll-up's rules for the downgrade (app/reports/aggregates.py may change).
QUEUED = "(SELECT e.* FROM swap_rollup_queue q JOIN swap_events e ON e.id = q.swap_id)"
DOWNGRADE_OEM = f"""
INSERT INTO oem_swap_daily (oem_id, day, outcome, reason_code, swaps)
SELECT COALESCE(v.oem_id, b.oem_id, 0), (s.started_at AT TIME ZONE 'UTC')::date,
    s.outcome::text, COALESCE(s.reason_code, ''), count(*)
FROM {QUEUED} s
LEFT JOIN vehicles v ON v.vin = s.vin
LEFT JOIN batteries b ON b.serial = s.removed_battery_serial
GROUP BY 1, 2, 3, 4
ON CONFLICT (oem_id, day, outcome, reason_code)
DO UPDATE SET swaps = oem_swap_daily.swaps + EXCLUDED.swaps
"""
DOWNGRADE_BATTERY = f"""
INSERT INTO battery_daily (battery_serial, day, swaps_in, swaps_out, health_rejections)
SELECT serial, day, sum(i), sum(o), sum(r) FROM (
    SELECT b.serial, (s.started_at AT TIME ZONE 'UTC')::date AS day, 1 AS i, 0 AS o, 0 AS r
    FROM {QUEUED} s JOIN batteries b ON b.id = s.installed_battery_id
    WHERE s.outcome = 'completed'
    UNION ALL
    SELECT b.serial, (s.started_at AT TIME ZONE 'UTC')::date, 0, 1, 0
    FROM {QUEUED} s JOIN batteries b ON b.id = s.removed_battery_id
    WHERE s.outcome = 'completed'
    UNION ALL
    SELECT b.serial, (s.started_at AT TIME ZONE 'UTC')::date, 0, 0, 1
    FROM {QUEUED} s JOIN batteries b ON b.serial = s.installed_battery_serial
    WHERE s.outcome <> 'completed' AND s.reason_code IN ('BatteryDamaged', 'BatterySoHLow')
) t GROUP BY 1, 2
ON CONFLICT (battery_serial, day) DO UPDATE SET
    swaps_in = battery_daily.swaps_in + EXCLUDED.swaps_in,
    swaps_out = battery_daily.swaps_out + EXCLUDED.swaps_out,
    health_rejections = battery_daily.health_rejections + EXCLUDED.health_rejections
"""


# The trigger function of migration c4d8e2f1a7b3, which the downgrade restores (a copy:
# migrations are history, each keeps the SQL it ran).
OLD_SWAP_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION swap_events_to_aggregates() RETURNS trigger LANGUAGE plpgsql AS $$
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


def upgrade() -> None:
    op.create_table(
        "swap_rollup_queue",
        sa.Column("swap_id", postgresql.UUID(as_uuid=True), nullable=False),
    )
    op.execute(QUEUE_TRIGGER_FUNCTION)


def downgrade() -> None:
    op.execute("LOCK TABLE swap_rollup_queue IN EXCLUSIVE MODE")
    op.execute(DOWNGRADE_OEM)
    op.execute(DOWNGRADE_BATTERY)
    op.execute(OLD_SWAP_TRIGGER_FUNCTION)
    op.drop_table("swap_rollup_queue")
