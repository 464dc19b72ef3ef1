"""Monthly partitions of the telemetry tables: created ahead of time, dropped whole at retention.

Partitions are named <table>_pYYYY_MM and cover one UTC month, as in the migration.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from app.core.config import Settings
from devices.contract import RecordKind

log = logging.getLogger(__name__)

TABLES: dict[RecordKind, str] = {
    RecordKind.charging: "charging_samples",
    RecordKind.health: "health_records",
    RecordKind.capacity: "capacity_records",
    RecordKind.vehicle: "vehicle_telemetry",
}
_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})_(?P<month>\d{2})$")


_RETENTION_SETTINGS = {kind: f"retention_{kind.name}_days" for kind in TABLES}


def retention(settings: Settings, kind: RecordKind) -> timedelta:
    # Called once per message: no dict of settings built per call.
    return timedelta(days=getattr(settings, _RETENTION_SETTINGS[kind]))


def month_start(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, start: datetime) -> str:
    return f"{table}_p{start.year:04d}_{start.month:02d}"


def create_partitions(
    conn: psycopg.Connection[Any], table: str, months: Iterable[datetime]
) -> None:
    for start in sorted({month_start(m) for m in months}):
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
            ).format(
                sql.Identifier(partition_name(table, start)),
                sql.Identifier(table),
                sql.Literal(start),
                sql.Literal(add_months(start, 1)),
            )
        )


def create_ahead(conn: psycopg.Connection[Any], now: datetime, months_ahead: int) -> None:
    current = month_start(now)
    months = [add_months(current, i) for i in range(months_ahead + 1)]
    for table in TABLES.values():
        create_partitions(conn, table, months)


def existing_partitions(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY c.relname",
        (table,),
    ).fetchall()
    return [str(r[0]) for r in rows]


@dataclass(frozen=True)
class PruneResult:
    dropped: list[str]
    created_ahead_months: int


def prune(conn: psycopg.Connection[Any], settings: Settings, now: datetime) -> PruneResult:
    """Drop every partition whose whole month is older than its kind's retention."""
    dropped: list[str] = []
    for kind, table in TABLES.items():
        cutoff = now - retention(settings, kind)
        for name in existing_partitions(conn, table):
            match = _PARTITION_NAME.match(name)
            if match is None or match["table"] != table:
                continue
            start = datetime(int(match["year"]), int(match["month"]), 1, tzinfo=UTC)
            if add_months(start, 1) <= cutoff:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                dropped.append(name)
                log.info("event=partition_dropped partition=%s cutoff=%s", name, cutoff.isoformat())
    create_ahead(conn, now, settings.partitions_ahead_months)
    return PruneResult(dropped=dropped, created_ahead_months=settings.partitions_ahead_months)
