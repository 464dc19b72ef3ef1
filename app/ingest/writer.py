"""Writing a batch of decoded messages in one transaction.

Per batch: look up the identities the records name, refuse what does not match, COPY the
valid records of each kind into a temporary staging table, move them into the partitioned
table with ON CONFLICT DO NOTHING (the natural key makes redeliveries no-ops), store the
dead letters, update derived state from the rows that were new, and commit once.

Its neighbours: the tables and their rows are app/ingest/tables.py, the identity and custody
checks app/ingest/registry.py, retrying and splitting a refused batch app/ingest/retry.py,
the monthly partitions app/ingest/partitions.py.
"""

import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg.pq import Format
from psycopg.rows import namedtuple_row

from app.core.config import Settings
from app.ingest.aggregates import (
    NEW_CHARGING_COLUMNS,
    NEW_CHARGING_DDL,
    NEW_CHARGING_TABLE,
    STAGED_CHARGING_TABLE,
)
from app.ingest.derived import apply_derived_state
from app.ingest.partitions import create_partitions, month_start
from app.ingest.payloads import DeadLetterRow, DecodedMessage
from app.ingest.registry import Judged, Registry, load_registry, mismatch, owner_of
from app.ingest.tables import SPECS
from devices.contract import RecordKind, StationStatus

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]


@dataclass
class Accepted:
    # Per kind, the rows to store: named tuples of its table's columns (app/ingest/tables.py).
    rows: dict[RecordKind, list[Any]] = field(default_factory=lambda: defaultdict(list))
    statuses: list[tuple[int, StationStatus, datetime]] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)


def sort_out(messages: Sequence[DecodedMessage], registry: Registry, limit: int) -> Accepted:
    """Splits a batch into rows to store and dead letters; leaves the messages unchanged so
    that a retried batch is sorted out the same way."""
    accepted = Accepted()
    owners: dict[str, tuple[int | None, int | str, str]] = {}
    # Per topic's station or vehicle: the verdicts on each battery's place (see registry.mismatch),
    # shared by all the messages of the batch from there.
    verdicts: dict[tuple[bool, int], Judged] = {}
    for message in messages:
        if message.dead_letters:
            accepted.dead_letters.extend(message.dead_letters)
        identity = message.identity
        if identity is None or not message.records:
            continue
        owner = owners.get(message.topic)
        if owner is None:
            owner = owners[message.topic] = owner_of(identity, registry)
        owner_id, stored_owner, unknown_reason = owner
        if owner_id is None:
            name = identity.vin or identity.station_code
            accepted.dead_letters.append(
                message.refusal(unknown_reason, f"{name!r} is not registered", limit=limit)
            )
            continue
        if identity.kind is RecordKind.status:
            accepted.statuses.extend(
                (owner_id, decoded.record, message.received_at)
                for decoded in message.records
                if isinstance(decoded.record, StationStatus)
            )
            continue
        judged = verdicts.setdefault((identity.vin is not None, owner_id), {})
        rows = accepted.rows[identity.kind]
        make_row = SPECS[identity.kind].make_row
        for decoded in message.records:
            refusal = mismatch(identity, decoded, owner_id, registry, judged)
            if refusal is not None:
                accepted.dead_letters.append(
                    message.refusal(*refusal, limit=limit, index=decoded.index, raw=decoded.raw)
                )
                continue
            rows.append(make_row(decoded.record, stored_owner, message.received_at))
    return accepted


def lock_batteries(conn: Connection, accepted: Accepted) -> None:
    """Locks the batteries whose derived state the batch changes, in one order: a batch's
    derived state must see every batch committed before it on the same battery (it reads
    their rows), and two ingest processes sharing a subscription must not deadlock."""
    serials = sorted({row.battery_serial for rows in accepted.rows.values() for row in rows})
    if serials:
        conn.execute(
            "SELECT 1 FROM batteries WHERE serial = ANY(%s) ORDER BY serial FOR NO KEY UPDATE",
            (serials,),
        )


@dataclass
class Staged:
    accepted: Accepted
    result: "WriteResult"
    # New rows of each kind but charging (whose new rows stay in the database), of the
    # columns its spec's `returning` names.
    inserted: dict[RecordKind, list[Any]] = field(default_factory=dict)
    # Whether the new charging rows are in NEW_CHARGING_TABLE (see BatchWriter._insert);
    # if not, every staged one was new.
    captured: bool = False


class Turn(Protocol):
    """A batch's place in line among batches written at once (see app/ingest/worker.py).
    The waits raise TurnTimeout after a while (the batch rolls back and is tried again), so
    no lock cycle missed there can hang the writers."""

    def wait_to_insert(self) -> None:
        """Returns when the batches ahead have inserted their rows."""

    def inserted(self) -> None:
        """Lets the next batch insert."""

    def wait(self) -> None:
        """Returns when the batches ahead have committed."""

    def withheld(self) -> AbstractContextManager[None]:
        """Within it, inserting does not let the next batch insert: the batch's rows are
        being written in parts, and a part other than the last is written."""


class TurnTimeout(Exception):
    pass


@dataclass
class WriteResult:
    stored: dict[RecordKind, int] = field(default_factory=dict)
    duplicates: dict[RecordKind, int] = field(default_factory=dict)
    newest_ts: dict[RecordKind, datetime] = field(default_factory=dict)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(self.stored.values()) + sum(self.duplicates.values())

    def merge(self, other: "WriteResult") -> None:
        for kind, n in other.stored.items():
            self.stored[kind] = self.stored.get(kind, 0) + n
        for kind, n in other.duplicates.items():
            self.duplicates[kind] = self.duplicates.get(kind, 0) + n
        for kind, ts in other.newest_ts.items():
            self.newest_ts[kind] = max(ts, self.newest_ts.get(kind, ts))
        self.dead_letters.extend(other.dead_letters)


def libpq_url(database_url: str) -> str:
    """psycopg wants the libpq form of the SQLAlchemy URL."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


class BinaryCursor(psycopg.Cursor[Any]):
    """Results in binary: timestamps and floats arrive without parsing text."""

    def __init__(self, connection: Connection, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.format = Format.BINARY


_CHARGING_COLUMNS = ", ".join(SPECS[RecordKind.charging].columns)
INSERT_CHARGING = (
    f"INSERT INTO charging_samples ({_CHARGING_COLUMNS}) SELECT {_CHARGING_COLUMNS}"
    f" FROM {STAGED_CHARGING_TABLE} ON CONFLICT DO NOTHING"
)
# Charging samples are the bulk of the telemetry: when a batch holds both new samples and
# duplicates, the new ones are kept in the database (a temporary table) for the derived
# state, instead of travelling back through Python.
CAPTURE_CHARGING = (
    f"WITH new AS (INSERT INTO charging_samples ({_CHARGING_COLUMNS})"
    f" SELECT {_CHARGING_COLUMNS} FROM {STAGED_CHARGING_TABLE}"
    f" ON CONFLICT DO NOTHING RETURNING {', '.join(NEW_CHARGING_COLUMNS)})"
    f" INSERT INTO {NEW_CHARGING_TABLE} SELECT * FROM new"
)


class BatchWriter:
    """Owns one psycopg connection; not thread-safe (the ingest has one writer thread)."""

    def __init__(self, conninfo: str, settings: Settings) -> None:
        self._conninfo = conninfo
        self._settings = settings
        self._conn: Connection | None = None
        self._known_partitions: set[tuple[str, datetime]] = set()

    @property
    def dead_letter_limit(self) -> int:
        return self._settings.ingest_dead_letter_payload_bytes

    def connect_if_possible(self) -> None:
        """Connects ahead of the first batch; a database that is down now is retried then."""
        try:
            self._connection()
        except psycopg.OperationalError as exc:
            log.warning("event=writer_connect_failed error=%s", exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def connection(self) -> Connection:
        """The writer's connection, opened if need be, for a caller's reads between writes
        (the OCPP gateway's lookup of the battery in a slot)."""
        return self._connection()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self._conninfo, connect_timeout=5, cursor_factory=BinaryCursor
            )
            for spec in SPECS.values():
                self._conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {spec.staging}"
                    f" (LIKE {spec.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
            self._conn.execute(NEW_CHARGING_DDL)
            self._conn.commit()
        return self._conn

    def write(self, messages: Sequence[DecodedMessage], turn: Turn | None = None) -> WriteResult:
        """Writes the batch in one transaction. turn: once the rows are checked and copied
        into the staging tables, the batches ahead insert first, then update derived state
        and commit first (see app/ingest/worker.py)."""
        conn = self._connection()
        try:
            self._ensure_partitions(conn, messages)
            with conn.transaction():
                staged = self._stage(conn, messages)
                if turn is not None:
                    turn.wait_to_insert()
                self._insert(conn, staged)
                if turn is not None:
                    turn.inserted()
                    turn.wait()
                result = self._finish(conn, staged)
        except psycopg.Error:
            if conn.broken:
                self.close()
            raise
        return result

    def _stage(self, conn: Connection, messages: Sequence[DecodedMessage]) -> "Staged":
        """What runs alongside other writers: identity checks, and COPY into this
        connection's own staging tables. It takes no lock another batch could wait for."""
        limit = self._settings.ingest_dead_letter_payload_bytes
        registry = load_registry(
            conn, messages, timedelta(seconds=self._settings.ingest_custody_grace_s)
        )
        accepted = sort_out(messages, registry, limit)
        staged = Staged(accepted, WriteResult(dead_letters=accepted.dead_letters))
        for kind, rows in accepted.rows.items():
            if not rows:
                continue
            spec = SPECS[kind]
            # In primary-key order: every sort of the new rows downstream finds them
            # presorted (PostgreSQL's quicksort checks for that first).
            rows.sort(key=spec.natural_key)
            with (
                conn.cursor() as cur,
                cur.copy(
                    f"COPY {spec.staging} ({', '.join(spec.columns)}) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(list(spec.types))
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
        return staged

    def _insert(self, conn: Connection, staged: "Staged") -> None:
        """Staging tables into the record tables, duplicates skipped."""
        result = staged.result
        for kind, rows in staged.accepted.rows.items():
            if not rows:
                continue
            spec = SPECS[kind]
            columns = ", ".join(spec.columns)
            with conn.cursor(row_factory=namedtuple_row) as cur:
                if kind is RecordKind.charging:
                    stored = self._insert_charging(conn, staged, len(rows))
                else:
                    new_rows = cur.execute(
                        f"INSERT INTO {spec.table} ({columns}) SELECT {columns}"
                        f" FROM {spec.staging} ON CONFLICT DO NOTHING"
                        f" RETURNING {', '.join(spec.returning)}"
                    ).fetchall()
                    staged.inserted[kind] = new_rows
                    stored = len(new_rows)
            result.stored[kind] = stored
            result.duplicates[kind] = len(rows) - stored
            result.newest_ts[kind] = max(row.ts for row in rows)

    @staticmethod
    def _insert_charging(conn: Connection, staged: "Staged", count: int) -> int:
        """Inserts the staged charging rows; returns how many were new.

        A batch is nearly always all new or, redelivered, all duplicates. Then a plain
        insert does, as every row or none is new (RETURNING the new rows into a table costs
        about 15 % more); a batch of both is inserted again, keeping its new rows."""
        with conn.transaction() as savepoint:
            stored = conn.execute(INSERT_CHARGING, prepare=True).rowcount
            if 0 < stored < count:
                raise psycopg.Rollback(savepoint)
        if 0 < stored < count:
            staged.captured = True
            return conn.execute(CAPTURE_CHARGING, prepare=True).rowcount
        return stored

    def _finish(self, conn: Connection, staged: "Staged") -> WriteResult:
        """Derived state and dead letters: one batch at a time per battery."""
        result = staged.result
        lock_batteries(conn, staged.accepted)
        if result.dead_letters:
            self._store_dead_letters(conn, result.dead_letters)
        apply_derived_state(
            conn,
            staged.inserted,
            staged.accepted.statuses,
            session_gap_s=self._settings.ingest_session_gap_s,
            new_charging=result.stored.get(RecordKind.charging, 0),
            # A batch whose every charging row was new has them in its staging table.
            new_charging_rows=NEW_CHARGING_TABLE if staged.captured else STAGED_CHARGING_TABLE,
        )
        return result

    def _ensure_partitions(self, conn: Connection, messages: Sequence[DecodedMessage]) -> None:
        """Creates the months the batch needs in a transaction of their own, before the
        batch's: DDL on a partitioned table locks all of it, and held until the batch commits
        it would stall, or with another writer waiting for its turn deadlock, the others."""
        stamps: dict[str, list[datetime]] = defaultdict(list)
        for message in messages:
            identity = message.identity
            if identity is None or identity.kind is RecordKind.status or not message.records:
                continue
            stamps[SPECS[identity.kind].table].extend(
                decoded.record.ts  # type: ignore[attr-defined]
                for decoded in message.records
            )
        needed: set[tuple[str, datetime]] = set()
        for table, times in stamps.items():
            first, last = month_start(min(times)), month_start(max(times))
            needed.update({(table, first), (table, last)})
            if first != last:
                needed.update((table, month_start(ts)) for ts in times)
        missing = needed - self._known_partitions
        if not missing:
            return
        with conn.transaction():
            for table in sorted({table for table, _ in missing}):
                create_partitions(conn, table, [m for t, m in missing if t == table])
        self._known_partitions |= missing

    @staticmethod
    def _store_dead_letters(conn: Connection, rows: list[DeadLetterRow]) -> None:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY dead_letters (received_at, topic, payload, payload_bytes, record_index,"
                " reason, detail, station_code, vin) FROM STDIN"
            ) as copy,
        ):
            for r in rows:
                copy.write_row(
                    [
                        r.received_at,
                        r.topic,
                        r.payload,
                        r.payload_bytes,
                        r.record_index,
                        r.reason,
                        r.detail,
                        r.station_code,
                        r.vin,
                    ]
                )
