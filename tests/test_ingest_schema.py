"""The telemetry tables as migrated, and their partition maintenance."""

from datetime import UTC, datetime

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from app.core import clock
from app.core.db import Base
from sqlalchemy import Engine

import app.models  # noqa: F401  (every table on the metadata)
from app.ingest.client import libpq_url
from app.ingest.partitions import (
    TABLES,
    add_months,
    create_partitions,
    existing_partitions,
    month_start,
    partition_name,
    prune,
)
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.ingest_harness import ingest_settings

OWN_TABLES = set(TABLES.values()) | {"dead_letters", "charging_sessions"}


def test_migrations_give_exactly_the_models_schema_for_telemetry_tables(engine: Engine) -> None:
    def ours(
        obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
    ) -> bool:
        table = getattr(obj, "table", obj)
        table_name = name if type_ == "table" else getattr(table, "name", None)
        # Monthly partitions are tables the models do not declare; their parents are compared.
        return table_name in OWN_TABLES

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": ours}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_record_tables_are_partitioned_by_month_with_partitions_ahead(engine: Engine) -> None:
    now = clock.now()
    with psycopg.connect(libpq_url(TEST_DATABASE_URL)) as conn:
        for table in TABLES.values():
            strategy = conn.execute(
                "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = %s::regclass",
                (table,),
            ).fetchone()
            assert strategy == ("r",)
            partitions = existing_partitions(conn, table)
            assert partition_name(table, datetime(now.year, now.month, 1, tzinfo=UTC)) in partitions
            assert len(partitions) >= 4


def test_prune_drops_partitions_past_retention_and_creates_future_ones(engine: Engine) -> None:
    settings = ingest_settings(
        TEST_DATABASE_URL, "mqtt://127.0.0.1:1883", "x/v1",
        retention_charging_days=365, retention_health_days=3650, partitions_ahead_months=5,
    )  # fmt: skip
    now = clock.now()
    current = month_start(now)
    expired, kept = add_months(current, -14), add_months(current, -11)
    # DDL is transactional: everything here is rolled back, the shared database stays as is.
    with psycopg.connect(libpq_url(TEST_DATABASE_URL)) as conn:
        try:
            for table in ("charging_samples", "health_records"):
                create_partitions(conn, table, [expired, kept])
            result = prune(conn, settings, now)
            charging = existing_partitions(conn, "charging_samples")
            health = existing_partitions(conn, "health_records")
            # Whatever else the database holds that is past retention goes too (by the clock,
            # the partitions the migration made may be older than this); what is not, stays.
            assert partition_name("charging_samples", expired) in result.dropped
            assert partition_name("charging_samples", kept) not in result.dropped
            assert all(name < partition_name("charging_samples", kept) for name in result.dropped)
            assert partition_name("charging_samples", kept) in charging
            assert partition_name("charging_samples", current) in charging
            assert {partition_name("health_records", m) for m in (expired, kept)} <= set(health)
            for table in TABLES.values():
                assert partition_name(table, add_months(current, 5)) in existing_partitions(
                    conn, table
                )
        finally:
            conn.rollback()
