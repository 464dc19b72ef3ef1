"""Writing a batch of decoded messages in one transaction.

Per batch: look up the identities the records name, refuse what does not match, COPY the
valid records of each kind into a temporary staging table, move them into the partitioned
table with ON CONFLICT DO NOTHING (the natural key makes redeliveries no-ops), store the
dead letters, update derived state from the rows that were new, and commit once.
"""

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol

import psycopg
from psycopg.pq import Format
from pydantic import BaseModel

from app.core.config import Settings
from app.ingest.aggregates import NEW_CHARGING_COLUMNS, NEW_CHARGING_DDL, NEW_CHARGING_TABLE
from app.ingest.derived import apply_derived_state
from app.ingest.partitions import create_partitions, month_start
from app.ingest.payloads import DeadLetterRow, DecodedMessage, DecodedRecord
from devices.contract import (
    CapacityRecord,
    ChargingSample,
    HealthRecord,
    RecordKind,
    StationStatus,
    TopicIdentity,
    VehicleTelemetry,
)

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    returning: str


SPECS: dict[RecordKind, TableSpec] = {
    RecordKind.charging: TableSpec(
        "charging_samples",
        (
            "battery_serial",
            "ts",
            "station_id",
            "slot",
            "soc_pct",
            "voltage_v",
            "current_a",
            "power_kw",
            "temp_c_min",
            "temp_c_max",
            "energy_kwh",
            "extra",
            "received_at",
        ),
        (
            "text",
            "timestamptz",
            "int8",
            "int4",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "jsonb",
            "timestamptz",
        ),
        "battery_serial, ts, station_id, slot, soc_pct, energy_kwh, temp_c_max",
    ),
    RecordKind.health: TableSpec(
        "health_records",
        (
            "battery_serial",
            "ts",
            "station_id",
            "soh_pct",
            "internal_resistance_mohm",
            "cell_voltage_min_v",
            "cell_voltage_max_v",
            "temp_c_max",
            "cycle_count",
            "extra",
            "received_at",
        ),
        (
            "text",
            "timestamptz",
            "int8",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "int4",
            "jsonb",
            "timestamptz",
        ),
        "battery_serial, ts, soh_pct, cycle_count",
    ),
    RecordKind.capacity: TableSpec(
        "capacity_records",
        (
            "battery_serial",
            "ts",
            "station_id",
            "capacity_kwh",
            "capacity_ah",
            "method",
            "temp_c",
            "extra",
            "received_at",
        ),
        (
            "text",
            "timestamptz",
            "int8",
            "float8",
            "float8",
            "text",
            "float8",
            "jsonb",
            "timestamptz",
        ),
        "battery_serial, ts",
    ),
    RecordKind.vehicle: TableSpec(
        "vehicle_telemetry",
        (
            "vin",
            "ts",
            "battery_serial",
            "soc_pct",
            "odometer_km",
            "pack_voltage_v",
            "pack_current_a",
            "temp_c_max",
            "lat",
            "lon",
            "extra",
            "received_at",
        ),
        (
            "text",
            "timestamptz",
            "text",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "jsonb",
            "timestamptz",
        ),
        "battery_serial, ts, soc_pct",
    ),
}


def _row(
    kind: RecordKind, record: BaseModel, owner_id: int | str, received_at: datetime
) -> list[Any]:
    extra = record.__pydantic_extra__ or None
    if isinstance(record, ChargingSample):
        return [
            record.battery_serial,
            record.ts,
            owner_id,
            record.slot,
            record.soc_pct,
            record.voltage_v,
            record.current_a,
            record.power_kw,
            record.temp_c_min,
            record.temp_c_max,
            record.energy_kwh,
            extra,
            received_at,
        ]
    if isinstance(record, HealthRecord):
        return [
            record.battery_serial,
            record.ts,
            owner_id,
            record.soh_pct,
            record.internal_resistance_mohm,
            record.cell_voltage_min_v,
            record.cell_voltage_max_v,
            record.temp_c_max,
            record.cycle_count,
            extra,
            received_at,
        ]
    if isinstance(record, CapacityRecord):
        return [
            record.battery_serial,
            record.ts,
            owner_id,
            record.capacity_kwh,
            record.capacity_ah,
            record.method.value,
            record.temp_c,
            extra,
            received_at,
        ]
    if isinstance(record, VehicleTelemetry):
        return [
            owner_id,
            record.ts,
            record.battery_serial,
            record.soc_pct,
            record.odometer_km,
            record.pack_voltage_v,
            record.pack_current_a,
            record.temp_c_max,
            record.lat,
            record.lon,
            extra,
            received_at,
        ]
    raise TypeError(f"no table for {type(record).__name__} ({kind})")


# Where a battery was: (station_id of its slot, vehicle_id); both None in a warehouse or in
# transit.
Place = tuple[int | None, int | None]
# A closed time span; None for no bound (comparing aware datetimes of different tzinfo
# objects costs a utcoffset() call each, and most spans have no bound at all).
Span = tuple[datetime | None, datetime | None]
# Per battery serial: a span over which it made no move, and the verdict on its place then.
Judged = dict[str, tuple[datetime | None, datetime | None, tuple[str, str] | None]]


@dataclass
class Registry:
    """The identities a batch names, read once per batch."""

    stations: dict[str, int] = field(default_factory=dict)
    slots: set[tuple[int, int]] = field(default_factory=set)
    vehicles: dict[str, int] = field(default_factory=dict)
    # serial -> where it is now, from the custody core.
    batteries: dict[str, Place] = field(default_factory=dict)
    # serial -> its custody moves (time, place it went to), oldest first, covering the
    # batch's time span: records are judged by where the battery was at their ts, so that
    # late (outbox) or backfilled records are not refused after a swap moved the battery.
    moves: dict[str, list[tuple[datetime, Place]]] = field(default_factory=dict)
    # serial -> where it was before its first recorded move (that move's `from`), for records
    # older than the whole history, as a backfill of past telemetry has.
    origins: dict[str, Place] = field(default_factory=dict)
    # Device clocks and the swap times operators record differ by minutes.
    grace: timedelta = timedelta(0)

    def places_near(self, serial: str, ts: datetime) -> set[Place]:
        """Every place the battery occupied within the grace period around ts."""
        moves = self.moves.get(serial, [])
        start, end = ts - self.grace, ts + self.grace
        before = [place for at, place in moves if at <= start]
        during = {place for at, place in moves if start < at <= end}
        if before:
            return {before[-1], *during}
        # ts precedes the recorded history: the battery was where its first move took it from.
        origin = self.origins.get(serial, self.batteries[serial])
        return {origin, *during}

    def stable_span(self, serial: str, ts: datetime) -> Span | None:
        """The widest [lo, hi] around ts (None: unbounded) over which places_near gives the
        same places as at ts: no move lies within the grace period of any instant of it.
        None when a move is that close to ts itself."""
        lo: datetime | None = None
        hi: datetime | None = None
        for at, _ in self.moves.get(serial, []):
            if ts - self.grace < at <= ts + self.grace:
                return None
            if at <= ts - self.grace:
                # places_near keeps this move as "before" while at <= t - grace.
                lo = at + self.grace if lo is None else max(lo, at + self.grace)
            else:
                # ...and must not let it into "during": t + grace < at.
                end = at - self.grace - timedelta(microseconds=1)
                hi = end if hi is None else min(hi, end)
        return lo, hi


def load_registry(
    conn: Connection, messages: Sequence[DecodedMessage], grace: timedelta = timedelta(0)
) -> Registry:
    codes: set[str] = set()
    vins: set[str] = set()
    serials: set[str] = set()
    stamps: list[datetime] = []
    for message in messages:
        if message.identity is None:
            continue
        if message.identity.station_code:
            codes.add(message.identity.station_code)
        if message.identity.vin:
            vins.add(message.identity.vin)
        if message.identity.kind is RecordKind.status or not message.records:
            continue
        # Every other kind has battery_serial and ts (the contract's models require them).
        for decoded in message.records:
            record: Any = decoded.record
            serials.add(record.battery_serial)
            stamps.append(record.ts)
    registry = Registry(grace=grace)
    if codes:
        for code, station_id in conn.execute(
            "SELECT code, id FROM stations WHERE code = ANY(%s)", (list(codes),)
        ):
            registry.stations[code] = station_id
        for station_id, number in conn.execute(
            "SELECT station_id, number FROM slots WHERE station_id = ANY(%s)",
            (list(registry.stations.values()),),
        ):
            registry.slots.add((station_id, number))
    if vins:
        for vin, vehicle_id in conn.execute(
            "SELECT vin, id FROM vehicles WHERE vin = ANY(%s)", (list(vins),)
        ):
            registry.vehicles[vin] = vehicle_id
    if serials:
        for serial, station_id, vehicle_id in conn.execute(
            "SELECT b.serial, s.station_id, b.vehicle_id FROM batteries b"
            " LEFT JOIN slots s ON s.id = b.slot_id WHERE b.serial = ANY(%s)",
            (list(serials),),
        ):
            registry.batteries[serial] = (station_id, vehicle_id)
        load_moves(conn, registry, min(stamps) - grace, max(stamps) + grace)
    return registry


def load_moves(conn: Connection, registry: Registry, start: datetime, end: datetime) -> None:
    """Per battery, the moves inside [start, end] and the last one before start."""
    for serial, at, station_id, vehicle_id in conn.execute(
        "SELECT b.serial, e.at, s.station_id, e.to_vehicle_id"
        " FROM batteries b"
        " JOIN custody_events e ON e.battery_id = b.id"
        " LEFT JOIN slots s ON s.id = e.to_slot_id"
        " WHERE b.serial = ANY(%s) AND e.at <= %s AND e.at >= COALESCE("
        "   (SELECT max(p.at) FROM custody_events p WHERE p.battery_id = b.id AND p.at <= %s),"
        "   '-infinity')"
        " ORDER BY b.serial, e.at, e.id",
        (sorted(registry.batteries), end, start),
    ):
        # In datetime.UTC, as the records' ts are (see payloads.record_ts): comparing it with
        # psycopg's ZoneInfo costs utcoffset() calls, and every record is compared with these.
        registry.moves.setdefault(serial, []).append((at.astimezone(UTC), (station_id, vehicle_id)))
    # For batteries with no move before the window, the records may predate their whole
    # history: keep where each was before its first move (that move's `from`, or for a
    # registration, which has none, the place it was registered in).
    unanchored = [
        serial
        for serial in sorted(registry.batteries)
        if not (registry.moves.get(serial) and registry.moves[serial][0][0] <= start)
    ]
    if not unanchored:
        return
    for serial, registered, station_id, vehicle_id, from_station, from_vehicle in conn.execute(
        "SELECT b.serial, e.from_kind IS NULL, s.station_id, e.to_vehicle_id,"
        " fs.station_id, e.from_vehicle_id"
        " FROM batteries b"
        " CROSS JOIN LATERAL (SELECT * FROM custody_events f WHERE f.battery_id = b.id"
        "   ORDER BY f.at, f.id LIMIT 1) e"
        " LEFT JOIN slots s ON s.id = e.to_slot_id"
        " LEFT JOIN slots fs ON fs.id = e.from_slot_id"
        " WHERE b.serial = ANY(%s)",
        (unanchored,),
    ):
        registry.origins[serial] = (
            (station_id, vehicle_id) if registered else (from_station, from_vehicle)
        )


@dataclass
class Accepted:
    rows: dict[RecordKind, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    statuses: list[tuple[int, StationStatus, datetime]] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)


def _mismatch(
    identity: TopicIdentity,
    decoded: DecodedRecord,
    owner_id: int,
    registry: Registry,
    judged: Judged | None = None,
) -> tuple[str, str] | None:
    """Why a record does not belong to its topic's station or vehicle, or None.

    judged: per battery serial, a time span over which the battery made no move (within
    the grace period) and the verdict on its place there, shared by the message's records."""
    record = decoded.record
    extra = record.__pydantic_extra__
    if extra:
        if identity.vin is not None and extra.get("vin", identity.vin) != identity.vin:
            return "identity_mismatch", "the record's vin differs from the topic's"
        if identity.station_code is not None and (
            extra.get("station_code", identity.station_code) != identity.station_code
        ):
            return "identity_mismatch", "the record's station_code differs from the topic's"
    serial: str = record.battery_serial  # type: ignore[attr-defined]
    if serial not in registry.batteries:
        return "unknown_battery", f"battery {serial!r} is not registered"
    ts: datetime = record.ts  # type: ignore[attr-defined]
    verdict: tuple[str, str] | None
    cached = judged.get(serial) if judged is not None else None
    if (
        cached is not None
        and (cached[0] is None or cached[0] <= ts)
        and (cached[1] is None or ts <= cached[1])
    ):
        verdict = cached[2]
        if verdict is not None:
            # The text names the record's own ts.
            verdict = _place_verdict(identity, serial, ts, owner_id, registry)
    else:
        verdict = _place_verdict(identity, serial, ts, owner_id, registry)
        if judged is not None:
            stable = registry.stable_span(serial, ts)
            if stable is not None:
                judged[serial] = (*stable, verdict)
    if verdict is not None or identity.kind is RecordKind.vehicle:
        return verdict
    if isinstance(record, ChargingSample) and (owner_id, record.slot) not in registry.slots:
        return "identity_mismatch", f"the station has no slot {record.slot}"
    return None


def _place_verdict(
    identity: TopicIdentity, serial: str, ts: datetime, owner_id: int, registry: Registry
) -> tuple[str, str] | None:
    places = registry.places_near(serial, ts)
    # Only where the battery was, give or take the grace period that covers custody lagging
    # a move: a battery in the warehouse or in transit has no station or vehicle that could
    # measure it, and a record "for" it from anywhere would feed its OEM's reports with
    # another device's readings (issue 11, finding 9).
    if identity.kind is RecordKind.vehicle:
        if not any(station is None and vehicle == owner_id for station, vehicle in places):
            return "identity_mismatch", f"battery {serial} was not in this vehicle at {ts}"
        return None
    if not any(vehicle is None and station == owner_id for station, vehicle in places):
        return "identity_mismatch", f"battery {serial} was not at this station at {ts}"
    return None


def _owner(identity: TopicIdentity, registry: Registry) -> tuple[int | None, int | str, str]:
    """The registry id of the topic's station or vehicle, the value stored with its records,
    and the refusal reason when it is unknown."""
    if identity.vin is not None:
        return registry.vehicles.get(identity.vin), identity.vin, "unknown_vehicle"
    station_id = registry.stations.get(identity.station_code or "")
    return station_id, station_id or 0, "unknown_station"


def sort_out(messages: Sequence[DecodedMessage], registry: Registry, limit: int) -> Accepted:
    """Splits a batch into rows to store and dead letters; leaves the messages unchanged so
    that a retried batch is sorted out the same way."""
    accepted = Accepted()
    owners: dict[str, tuple[int | None, int | str, str]] = {}
    # Per topic's station or vehicle: the verdicts on each battery's place (see _mismatch),
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
            owner = owners[message.topic] = _owner(identity, registry)
        owner_id, stored_owner, unknown_reason = owner
        if owner_id is None:
            name = identity.vin or identity.station_code
            accepted.dead_letters.append(
                message.refusal(unknown_reason, f"{name!r} is not registered", limit=limit)
            )
            continue
        judged = verdicts.setdefault((identity.vin is not None, owner_id), {})
        rows = accepted.rows[identity.kind]
        for decoded in message.records:
            if isinstance(decoded.record, StationStatus):
                accepted.statuses.append((owner_id, decoded.record, message.received_at))
                continue
            refusal = _mismatch(identity, decoded, owner_id, registry, judged)
            if refusal is not None:
                accepted.dead_letters.append(
                    message.refusal(*refusal, limit=limit, index=decoded.index, raw=decoded.raw)
                )
                continue
            rows.append(_row(identity.kind, decoded.record, stored_owner, message.received_at))
    return accepted


def lock_batteries(conn: Connection, accepted: Accepted) -> None:
    """Locks the batteries whose derived state the batch changes, in one order: a batch's
    derived state must see every batch committed before it on the same battery (it reads
    their rows), and two ingest processes sharing a subscription must not deadlock."""
    serials = sorted({row[0] if kind is not RecordKind.vehicle else row[2]
                      for kind, rows in accepted.rows.items() for row in rows})  # fmt: skip
    if serials:
        conn.execute(
            "SELECT 1 FROM batteries WHERE serial = ANY(%s) ORDER BY serial FOR NO KEY UPDATE",
            (serials,),
        )


@dataclass
class Staged:
    accepted: Accepted
    result: "WriteResult"
    # New rows of each kind but charging (whose new rows wait in NEW_CHARGING_TABLE).
    inserted: dict[RecordKind, list[tuple[Any, ...]]] = field(default_factory=dict)
    # Whether the new charging rows are in NEW_CHARGING_TABLE (see BatchWriter._insert).
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


_natural_key = itemgetter(0, 1)


class BinaryCursor(psycopg.Cursor[Any]):
    """Results in binary: timestamps and floats arrive without parsing text."""

    def __init__(self, connection: Connection, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.format = Format.BINARY


_CHARGING_COLUMNS = ", ".join(SPECS[RecordKind.charging].columns)
INSERT_CHARGING = (
    f"INSERT INTO charging_samples ({_CHARGING_COLUMNS}) SELECT {_CHARGING_COLUMNS}"
    " FROM stage_charging_samples ON CONFLICT DO NOTHING"
)
# Charging samples are the bulk of the telemetry: when a batch holds both new samples and
# duplicates, the new ones are kept in the database (a temporary table) for the derived
# state, instead of travelling back through Python.
CAPTURE_CHARGING = (
    f"WITH new AS (INSERT INTO charging_samples ({_CHARGING_COLUMNS})"
    f" SELECT {_CHARGING_COLUMNS} FROM stage_charging_samples"
    f" ON CONFLICT DO NOTHING RETURNING {', '.join(NEW_CHARGING_COLUMNS)})"
    f" INSERT INTO {NEW_CHARGING_TABLE} SELECT * FROM new"
)
# The new charging rows of a batch whose every one was new: the staged ones.
FILL_NEW_CHARGING = (
    f"INSERT INTO {NEW_CHARGING_TABLE} SELECT {', '.join(NEW_CHARGING_COLUMNS)}"
    " FROM stage_charging_samples"
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
                    f"CREATE TEMP TABLE IF NOT EXISTS stage_{spec.table}"
                    f" (LIKE {spec.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
            self._conn.execute(NEW_CHARGING_DDL)
            self._conn.commit()
        return self._conn

    def write(self, messages: Sequence[DecodedMessage], turn: "Turn | None" = None) -> WriteResult:
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
            rows.sort(key=_natural_key)
            with (
                conn.cursor() as cur,
                cur.copy(
                    f"COPY stage_{spec.table} ({', '.join(spec.columns)}) FROM STDIN"
                    " (FORMAT BINARY)"
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
            with conn.cursor() as cur:
                if kind is RecordKind.charging:
                    stored = self._insert_charging(conn, staged, len(rows))
                else:
                    new_rows = cur.execute(
                        f"INSERT INTO {spec.table} ({columns}) SELECT {columns}"
                        f" FROM stage_{spec.table} ON CONFLICT DO NOTHING"
                        f" RETURNING {spec.returning}"
                    ).fetchall()
                    staged.inserted[kind] = new_rows
                    stored = len(new_rows)
            result.stored[kind] = stored
            result.duplicates[kind] = len(rows) - stored
            result.newest_ts[kind] = max(row[1] for row in rows)

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

    def _fill_new_charging(self, conn: Connection) -> None:
        conn.execute(FILL_NEW_CHARGING, prepare=True)

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
            fill_new_charging=None if staged.captured else lambda: self._fill_new_charging(conn),
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


def write_with_retry(
    writer: BatchWriter,
    messages: Sequence[DecodedMessage],
    *,
    retry_max_s: float,
    stopping: Any,
    on_retry: Any = None,
    turn: Turn | None = None,
) -> WriteResult | None:
    """Retries forever while the database is unreachable: nothing is acknowledged meanwhile,
    so the broker keeps the backlog. A batch the database refuses for another reason is
    split so one poisonous message cannot block the stream; that message is dead-lettered.
    Returns None only if asked to stop before the batch was written."""
    delay = 0.1
    refusals = 0
    while True:
        try:
            return writer.write(messages, turn)
        except (psycopg.OperationalError, TurnTimeout) as exc:
            if stopping():
                return None
            if on_retry is not None:
                on_retry()
            log.warning("event=write_retry error=%s delay_s=%.1f", type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, retry_max_s)
        except Exception as exc:
            # Anything else is taken as the fault of a message in the batch: a refusal by the
            # database (a value out of a column's range) or an error in Python on the way
            # there (OverflowError in binary COPY, a recursion limit in a JSON encoder). Left
            # to propagate, it would end the writer, and the broker would hand the same
            # message back forever.
            if len(messages) == 1:
                if refusals == 2:
                    raise
                refusals += 1
                messages = [_unwritable(messages[0], exc, writer.dead_letter_limit)]
                continue
            log.error("event=batch_refused error=%s; writing message by message", exc)
            merged = WriteResult()
            for message in messages:
                single = write_with_retry(
                    writer,
                    [message],
                    retry_max_s=retry_max_s,
                    stopping=stopping,
                    on_retry=on_retry,
                    turn=turn,
                )
                if single is None:
                    return None
                merged.merge(single)
            return merged


def _unwritable(message: DecodedMessage, exc: Exception, limit: int) -> DecodedMessage:
    """The message's dead letter in its place; if even that was refused, a bare one."""
    log.error(
        "event=message_unwritable topic=%s error=%s: %s",
        message.topic,
        type(exc).__name__,
        str(exc)[:200],
    )
    refused = DecodedMessage(message.topic, message.identity, message.payload, message.received_at)
    if message.records or not message.dead_letters:
        refused.dead_letter("store_error", f"{type(exc).__name__}: {exc}", limit=limit)
    else:
        # Its dead letter was what could not be written: keep the fact and the topic, which
        # the broker accepted, without the payload or the text of the error.
        refused.payload = b""
        refused.dead_letter("store_error", type(exc).__name__, limit=0)
    return refused
