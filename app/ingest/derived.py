"""State derived from telemetry, updated once per batch from the rows that were new.

Only newly inserted rows feed it, so a redelivered record cannot count twice. Each piece has
one path: the batteries' latest readings, the stations' status, the charging sessions (from
the new charging rows, read where the writer has them: one of NEW_CHARGING_RELATIONS) and
battery_daily (app/ingest/aggregates.py).
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar

import psycopg
from psycopg.rows import class_row

from app.ingest.aggregates import (
    NEW_CHARGING_RELATIONS,
    NEW_CHARGING_TABLE,
    NewKey,
    update_daily_aggregates,
)
from devices.contract import RecordKind, StationStatus

Connection = psycopg.Connection[Any]


class HealthRow(NamedTuple):
    """What the writer returns of a new health record (its RETURNING, in this order)."""

    battery_serial: str
    ts: datetime
    soh_pct: float
    cycle_count: int


class VehicleRow(NamedTuple):
    """What the writer returns of a new vehicle reading."""

    battery_serial: str
    ts: datetime
    soc_pct: float


class Reading(Protocol):
    @property
    def battery_serial(self) -> str: ...

    @property
    def ts(self) -> datetime: ...


R = TypeVar("R", bound=Reading)

# The writer's RETURNING per kind but charging (whose new rows stay in the database), as
# named rows.
RETURNED: dict[RecordKind, Callable[[Iterable[Any]], Reading]] = {
    RecordKind.health: HealthRow._make,
    RecordKind.vehicle: VehicleRow._make,
    # What the writer returns of a new capacity record.
    RecordKind.capacity: NewKey._make,
}


def _latest(rows: Iterable[R]) -> list[R]:
    """The newest row per battery serial."""
    latest: dict[str, R] = {}
    for row in rows:
        current = latest.get(row.battery_serial)
        if current is None or row.ts > current.ts:
            latest[row.battery_serial] = row
    return list(latest.values())


# Each field of a battery's readings keeps its own measured-at time (batteries.soh_measured_at,
# ...): a record replaces a field only when it is at least as new as that field's time, so a
# health record arriving after a newer SoC reading still updates SoH and cycles, and an older
# or resent record never overwrites a newer value. readings_at is the newest of them.
def _newer(field: str) -> str:
    """Whether the reading v is at least as new as the battery's `field` (SET expressions
    all read the row as it was, so each field is judged by its own old time)."""
    return f"(b.{field}_measured_at IS NULL OR b.{field}_measured_at <= v.ts)"


def _set_if_newer(field: str, column: str, value: str) -> str:
    return f"{column} = CASE WHEN {_newer(field)} THEN {value} ELSE b.{column} END"


UPDATE_FROM_HEALTH = (
    "UPDATE batteries b SET "
    + ", ".join(
        _set_if_newer(field, column, value)
        for field, column, value in (
            ("soh", "soh_pct", "v.soh"),
            ("soh", "soh_measured_at", "v.ts"),
            ("soh", "soh_source", "'health_record'"),
            ("cycles", "equivalent_full_cycles", "v.cycles"),
            ("cycles", "cycles_measured_at", "v.ts"),
            ("cycles", "cycles_source", "'health_record'"),
        )
    )
    + ", readings_at = greatest(b.readings_at, v.ts)"
    " FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::float8[])"
    " AS v(serial, ts, soh, cycles)"
    f" WHERE b.serial = v.serial AND ({_newer('soh')} OR {_newer('cycles')})"
)
UPDATE_SOC_FROM_VEHICLE = (
    "UPDATE batteries b SET soc_pct = v.soc, soc_measured_at = v.ts,"
    " readings_at = greatest(b.readings_at, v.ts)"
    " FROM unnest(%s::text[], %s::timestamptz[], %s::float8[]) AS v(serial, ts, soc)"
    f" WHERE b.serial = v.serial AND {_newer('soc')}"
)


def update_batteries(conn: Connection, inserted: dict[RecordKind, list[tuple[Any, ...]]]) -> None:
    health = _latest(HealthRow._make(r) for r in inserted.get(RecordKind.health, []))
    if health:
        conn.execute(
            UPDATE_FROM_HEALTH,
            (
                [r.battery_serial for r in health],
                [r.ts for r in health],
                [r.soh_pct for r in health],
                [float(r.cycle_count) for r in health],
            ),
        )
    vehicle = _latest(VehicleRow._make(r) for r in inserted.get(RecordKind.vehicle, []))
    if vehicle:
        conn.execute(
            UPDATE_SOC_FROM_VEHICLE,
            (
                [r.battery_serial for r in vehicle],
                [r.ts for r in vehicle],
                [r.soc_pct for r in vehicle],
            ),
        )


# After update_batteries: a charging sample and a vehicle reading of one battery at the same
# instant resolve to the charging sample's SoC.
UPDATE_SOC_FROM_NEW_CHARGING = {
    new: "UPDATE batteries b SET soc_pct = v.soc_pct, soc_measured_at = v.ts,"
    " readings_at = greatest(b.readings_at, v.ts)"
    # The newest sample per battery by a hashed max() and join: no sort of the batch.
    f" FROM {new} v JOIN (SELECT battery_serial, max(ts) AS ts"
    f" FROM {new} GROUP BY battery_serial) m USING (battery_serial, ts)"
    f" WHERE b.serial = v.battery_serial AND {_newer('soc')}"
    for new in NEW_CHARGING_RELATIONS
}


class StationSeen(NamedTuple):
    at: datetime
    online: bool


def update_stations(conn: Connection, statuses: list[tuple[int, StationStatus, datetime]]) -> None:
    latest: dict[int, StationSeen] = {}
    for station_id, status, received_at in statuses:
        # A Last Will carries no ts: it is as recent as its delivery.
        seen = status.ts or received_at
        if station_id not in latest or seen >= latest[station_id].at:
            latest[station_id] = StationSeen(seen, status.online)
    if not latest:
        return
    ids = list(latest)
    conn.execute(
        "UPDATE stations s SET online = v.online, last_seen_at = v.seen"
        " FROM unnest(%s::int8[], %s::timestamptz[], %s::bool[]) AS v(id, seen, online)"
        " WHERE s.id = v.id AND (s.last_seen_at IS NULL OR s.last_seen_at <= v.seen)",
        (ids, [latest[i].at for i in ids], [latest[i].online for i in ids]),
    )


@dataclass
class Session:
    id: int | None
    battery_serial: str
    station_id: int
    slot: int
    started_at: datetime
    ended_at: datetime
    soc_from_pct: float
    soc_to_pct: float
    energy_start_kwh: float
    energy_end_kwh: float
    peak_temp_c: float
    sample_count: int
    dirty: bool = False

    def accepts(self, station_id: int, slot: int, ts: datetime, gap: timedelta) -> bool:
        return (
            self.station_id == station_id
            and self.slot == slot
            and self.started_at - gap < ts < self.ended_at + gap
        )

    def add(self, ts: datetime, soc: float, energy: float, temp: float) -> None:
        if ts < self.started_at:
            self.started_at, self.soc_from_pct, self.energy_start_kwh = ts, soc, energy
        if ts > self.ended_at:
            self.ended_at, self.soc_to_pct, self.energy_end_kwh = ts, soc, energy
        self.peak_temp_c = max(self.peak_temp_c, temp)
        self.sample_count += 1
        self.dirty = True

    def add_run(self, run: "Run") -> None:
        """The same as add() for each of the run's samples in time order."""
        if run.first_ts < self.started_at:
            self.started_at, self.soc_from_pct, self.energy_start_kwh = (
                run.first_ts,
                run.soc_first,
                run.energy_first,
            )
        if run.last_ts > self.ended_at:
            self.ended_at, self.soc_to_pct, self.energy_end_kwh = (
                run.last_ts,
                run.soc_last,
                run.energy_last,
            )
        self.peak_temp_c = max(self.peak_temp_c, run.peak_temp)
        self.sample_count += run.samples
        self.dirty = True

    def may_accept(self, run: "Run", gap: timedelta) -> bool:
        """Whether it would accept any instant of the run's time span."""
        return (
            self.station_id == run.station_id
            and self.slot == run.slot
            and self.started_at - gap < run.last_ts
            and run.first_ts < self.ended_at + gap
        )


@dataclass(frozen=True)
class Run:
    """New samples of one battery in one slot, each less than a session gap after the last:
    in the per-sample roll-up, whichever session takes the first takes them all."""

    battery_serial: str
    station_id: int
    slot: int
    first_ts: datetime
    last_ts: datetime
    soc_first: float
    soc_last: float
    energy_first: float
    energy_last: float
    peak_temp: float
    samples: int


_SESSION_COLUMNS = (
    "id, battery_serial, station_id, slot, started_at, ended_at, soc_from_pct, soc_to_pct,"
    " energy_start_kwh, energy_end_kwh, peak_temp_c, sample_count"
)


def _load_sessions(
    conn: Connection, serials: list[str], first: datetime, last: datetime, gap: timedelta
) -> dict[str, list[Session]]:
    sessions: dict[str, list[Session]] = defaultdict(list)
    with conn.cursor(row_factory=class_row(Session)) as cur:
        cur.execute(
            f"SELECT {_SESSION_COLUMNS} FROM charging_sessions"
            " WHERE battery_serial = ANY(%s) AND ended_at > %s AND started_at < %s"
            # Sessions never merge, so two may accept one sample: the earliest takes it, in
            # every process and every run alike.
            " ORDER BY battery_serial, started_at, id",
            (serials, first - gap, last + gap),
        )
        for session in cur:
            sessions[session.battery_serial].append(session)
    return sessions


class Sample(NamedTuple):
    """A new charging sample, as the session roll-up reads it."""

    ts: datetime
    station_id: int
    slot: int
    soc_pct: float
    energy_kwh: float
    temp_c_max: float


def _add_sample(group: list[Session], serial: str, sample: Sample, gap: timedelta) -> None:
    """Adds the sample to the first session of the battery that accepts it, or starts one."""
    session = next(
        (s for s in group if s.accepts(sample.station_id, sample.slot, sample.ts, gap)), None
    )
    if session is None:
        session = Session(None, serial, sample.station_id, sample.slot, sample.ts, sample.ts,
                          sample.soc_pct, sample.soc_pct, sample.energy_kwh, sample.energy_kwh,
                          sample.temp_c_max, 0)  # fmt: skip
        group.append(session)
        session.sample_count = 1
        session.dirty = True
    else:
        session.add(sample.ts, sample.soc_pct, sample.energy_kwh, sample.temp_c_max)


# The batch's new charging samples as runs (see Run), per battery in time order.
_RUNS_OF = """
WITH s AS (
    SELECT battery_serial, station_id, slot, ts, soc_pct, energy_kwh, temp_c_max,
        CASE WHEN ts - lag(ts) OVER w >= %(gap)s THEN 1 ELSE 0 END AS brk
    FROM {new}
    WINDOW w AS (PARTITION BY battery_serial, station_id, slot ORDER BY ts)
), g AS (
    SELECT s.*, sum(brk) OVER (PARTITION BY battery_serial, station_id, slot ORDER BY ts) AS run
    FROM s
)
SELECT battery_serial, station_id, slot, first_ts, last_ts,
    head[2] AS soc_first, tail[2] AS soc_last, head[3] AS energy_first,
    tail[3] AS energy_last, peak_temp, samples
FROM (
    SELECT battery_serial, station_id, slot, min(ts) AS first_ts, max(ts) AS last_ts,
        -- The first and the last sample's values in one pass: arrays led by the time
        -- compare by it (float8 holds microseconds since the epoch, and these values,
        -- exactly); one array per sample.
        min(sample) AS head, max(sample) AS tail, max(temp_c_max) AS peak_temp,
        count(*)::int4 AS samples
    FROM (
        SELECT g.*,
            ARRAY[(extract(epoch FROM ts) * 1000000)::float8, soc_pct, energy_kwh] AS sample
        FROM g
    ) g
    GROUP BY battery_serial, station_id, slot, run
) runs
ORDER BY battery_serial, first_ts"""
_RUNS = {new: _RUNS_OF.format(new=new) for new in NEW_CHARGING_RELATIONS}


def roll_up_new_charging(conn: Connection, gap_s: float, new: str = NEW_CHARGING_TABLE) -> None:
    """The batch's new charging samples (in `new`) into charging_sessions, a run
    at a time: a run joins the first session that accepts its first sample, or starts one,
    exactly as its samples would one by one, unless an earlier session could take some of
    them; then, rarely, that run's samples go one by one."""
    gap = timedelta(seconds=gap_s)
    with conn.cursor(row_factory=class_row(Run)) as cur:
        runs = cur.execute(_RUNS[new], {"gap": gap}, prepare=True).fetchall()
    if not runs:
        return
    sessions = _load_sessions(
        conn,
        sorted({r.battery_serial for r in runs}),
        min(r.first_ts for r in runs),
        max(r.last_ts for r in runs),
        gap,
    )
    for run in runs:
        group = sessions[run.battery_serial]
        target = next(
            (s for s in group if s.accepts(run.station_id, run.slot, run.first_ts, gap)), None
        )
        before = group if target is None else group[: group.index(target)]
        if any(s.may_accept(run, gap) for s in before):
            for sample in _run_samples(conn, run, new):
                _add_sample(group, run.battery_serial, sample, gap)
        elif target is None:
            group.append(
                Session(
                    None,
                    run.battery_serial,
                    run.station_id,
                    run.slot,
                    run.first_ts,
                    run.last_ts,
                    run.soc_first,
                    run.soc_last,
                    run.energy_first,
                    run.energy_last,
                    run.peak_temp,
                    run.samples,
                    dirty=True,
                )
            )
        else:
            target.add_run(run)
    save_sessions(conn, sessions)


def _run_samples(conn: Connection, run: Run, new: str) -> list[Sample]:
    with conn.cursor(row_factory=class_row(Sample)) as cur:
        return cur.execute(
            "SELECT ts, station_id, slot, soc_pct, energy_kwh, temp_c_max"
            f" FROM {new} WHERE battery_serial = %s AND station_id = %s"
            " AND slot = %s AND ts >= %s AND ts <= %s ORDER BY ts",
            (run.battery_serial, run.station_id, run.slot, run.first_ts, run.last_ts),
        ).fetchall()


def save_sessions(conn: Connection, sessions: dict[str, list[Session]]) -> None:
    changed = [s for group in sessions.values() for s in group if s.dirty]
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE charging_sessions SET started_at = %s, ended_at = %s, soc_from_pct = %s,"
            " soc_to_pct = %s, energy_start_kwh = %s, energy_end_kwh = %s, peak_temp_c = %s,"
            " sample_count = %s, updated_at = now() WHERE id = %s",
            [
                (
                    s.started_at,
                    s.ended_at,
                    s.soc_from_pct,
                    s.soc_to_pct,
                    s.energy_start_kwh,
                    s.energy_end_kwh,
                    s.peak_temp_c,
                    s.sample_count,
                    s.id,
                )
                for s in changed
                if s.id is not None
            ],
        )
        cur.executemany(
            "INSERT INTO charging_sessions (battery_serial, station_id, slot, started_at,"
            " ended_at, soc_from_pct, soc_to_pct, energy_start_kwh, energy_end_kwh, peak_temp_c,"
            " sample_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    s.battery_serial,
                    s.station_id,
                    s.slot,
                    s.started_at,
                    s.ended_at,
                    s.soc_from_pct,
                    s.soc_to_pct,
                    s.energy_start_kwh,
                    s.energy_end_kwh,
                    s.peak_temp_c,
                    s.sample_count,
                )
                for s in changed
                if s.id is None
            ],
        )


def apply_derived_state(
    conn: Connection,
    inserted: dict[RecordKind, list[tuple[Any, ...]]],
    statuses: list[tuple[int, StationStatus, datetime]],
    *,
    session_gap_s: float,
    new_charging: int = 0,
    new_charging_rows: str = NEW_CHARGING_TABLE,
) -> None:
    """inserted: the new rows of each kind but charging, as the writer's RETURNING (see
    RETURNED). new_charging: how many charging rows were new; they are the rows of
    new_charging_rows, one of NEW_CHARGING_RELATIONS."""
    update_batteries(conn, inserted)
    if new_charging:
        conn.execute(UPDATE_SOC_FROM_NEW_CHARGING[new_charging_rows], prepare=True)
    update_stations(conn, statuses)
    if new_charging:
        roll_up_new_charging(conn, session_gap_s, new_charging_rows)
    new_keys = {
        kind: [NewKey(row.battery_serial, row.ts) for row in map(RETURNED[kind], rows)]
        for kind, rows in inserted.items()
        if rows
    }
    update_daily_aggregates(
        conn,
        new_keys,
        new_charging=bool(new_charging),
        session_gap_s=session_gap_s,
        new_charging_rows=new_charging_rows,
    )
