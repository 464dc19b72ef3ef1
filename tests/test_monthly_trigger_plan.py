"""The battery_monthly trigger plans each firing for the rows it has.

A plan cached from a first firing over a few rows (a nested loop over the transition tables)
made a later UPDATE of thousands of battery_daily rows on the same connection take minutes
(this test's 20,000-row update: 90 s before migration e7a1c4d2f9b6, under 1 s after).
auto_explain shows the plan of the trigger's statement as a notice, firing by firing."""

from datetime import date
from typing import Any

import psycopg
from sqlalchemy import Engine

from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.ingest_harness import unique_prefix

DB = TEST_DATABASE_URL.replace("postgresql+psycopg://", "postgresql://", 1)
UPSERT = (
    "INSERT INTO battery_daily (battery_serial, day, charging_samples)"
    " SELECT %s || g / 100, %s::date + g %% 100, 1 FROM generate_series(0, %s - 1) g"
    " ON CONFLICT (battery_serial, day)"
    " DO UPDATE SET charging_samples = battery_daily.charging_samples + 1"
)


def test_a_large_update_after_a_small_one_is_not_planned_as_a_nested_loop(engine: Engine) -> None:
    prefix = unique_prefix()[:14]
    plans: list[str] = []
    with psycopg.connect(DB) as conn:
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting, value in (
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
            ("auto_explain.log_level", "notice"),
        ):
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        start = date(2020, 1, 1)
        with conn.transaction(force_rollback=True):
            small, large = 2, 20_000
            args: Any = (prefix, start, small)
            conn.execute(UPSERT, args)  # inserts
            conn.execute(UPSERT, args)  # updates two rows: the trigger's first UPDATE firing
            plans.clear()
            conn.execute(UPSERT, (prefix, start, large))  # 2 updated, the rest inserted
            conn.execute(UPSERT, (prefix, start, large))  # 20,000 updated
    # The trigger's statement for the UPDATE firing joins the old and new transition tables.
    delta_plans = [p for p in plans if "JOIN daily_old" in p]
    assert len(delta_plans) >= 2, f"no plan of the trigger's UPDATE statement: {plans[:3]}"
    last = delta_plans[-1]
    assert "Named Tuplestore Scan on daily_old" in last or "daily_old" in last, last
    assert "rows=20000" in last, last  # planned for the rows this firing has
    assert "Nested Loop" not in last, last
