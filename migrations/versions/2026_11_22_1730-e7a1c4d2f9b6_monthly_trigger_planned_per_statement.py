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

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "e7a1c4d2f9b6"
down_revision: str | None = "d5e9f3a2b8c4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _previous() -> ModuleType:
    """The migration that created the trigger, for its statements (one definition of them)."""
    path = Path(__file__).with_name("2026_11_22_1600-d5e9f3a2b8c4_battery_monthly.py")
    spec = importlib.util.spec_from_file_location("battery_monthly_migration", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trigger_function() -> str:
    previous = _previous()
    on_insert = previous._upsert(previous.rollup_select("daily_new"))
    on_update = previous._upsert(previous.delta_select())
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
    op.execute(
        _previous().trigger_function().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    )
