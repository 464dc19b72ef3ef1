"""State derived from telemetry, updated once per batch from the rows that were new.

Only newly inserted rows feed it, so a redelivered record cannot count twice.
"""

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from app.ingest.aggregates import update_daily_aggregates
from app.ingest.daily_charging import NEW_CHARGING_TABLE, add_appended_charging, add_new_charging
from devices.contract import RecordKind, StationStatus

Connection = psycopg.Connection[Any]


def _latest(rows: Sequence[Sequence[Any]]) -> dict[str, Sequence[Any]]:
    """The newest row per battery serial (rows start with serial, ts)."""
    latest: dict[str, Sequence[Any]] = {}
    for row in rows:
        current = latest.get(row[0])
        if current is None or row[1] > current[1]:
            latest[row[0]] = row
    return latest


def update_batteries(conn: Connection, inserted: dict[RecordKind, list[tuple[Any, ...]]]) -> None:
    # batteries has one readings_at for SoC and SoH, so a reading older than it is ignored;
    # health records arrive in order with the station's charging samples in practice.
    health = _latest(inserted.get(RecordKind.health, []))
    if health:
        rows = list(health.values())
        conn.execute(
            "UPDATE batteries b SET soh_pct = v.soh, equivalent_full_cycles = v.cycles,"
            " readings_at = v.ts"
            " FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::float8[])"
            " AS v(serial, ts, soh, cycles)"
            " WHERE b.serial = v.serial AND (b.readings_at IS NULL OR b.readings_at <= v.ts)",
            (
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [float(r[3]) for r in rows],
            ),
        )
    soc_rows = [(r[0], r[1], r[4]) for r in inserted.get(RecordKind.charging, [])]
    soc_rows += [(r[0], r[1], r[2]) for r in inserted.get(RecordKind.vehicle, [])]
    _set_soc(conn, list(_latest(soc_rows).values()))


def _set_soc(conn: Connection, readings: Sequence[Sequence[Any]]) -> None:
    """readings: (serial, ts, soc), one per battery."""
    if not readings:
        return
    conn.execute(
        "UPDATE batteries b SET soc_pct = v.soc, readings_at = v.ts"
        " FROM unnest(%s::text[], %s::timestamptz[], %s::float8[]) AS v(serial, ts, soc)"
        " WHERE b.serial = v.serial AND (b.readings_at IS NULL OR b.readings_at <= v.ts)",
        ([r[0] for r in readings], [r[1] for r in readings], [r[2] for r in readings]),
    )


# After update_batteries: a charging sample and a vehicle reading of one battery at the same
# instant resolve to the charging sample's SoC, as update_batteries' _latest would.
UPDATE_SOC_FROM_NEW_CHARGING = (
    "UPDATE batteries b SET soc_pct = v.soc_pct, readings_at = v.ts"
    # The newest sample per battery by a hashed max() and join: no sort of the batch.
    f" FROM {NEW_CHARGING_TABLE} v JOIN (SELECT battery_serial, max(ts) AS ts"
    f" FROM {NEW_CHARGING_TABLE} GROUP BY battery_serial) m USING (battery_serial, ts)"
    " WHERE b.serial = v.battery_serial AND (b.readings_at IS NULL OR b.readings_at <= v.ts)"
)


def update_soc(conn: Connection, rows: list[list[Any]]) -> None:
    """UPDATE_SOC_FROM_NEW_CHARGING from the writer's charging rows (every one new)."""
    _set_soc(conn, [(r[0], r[1], r[4]) for r in _latest(rows).values()])


def update_stations(conn: Connection, statuses: list[tuple[int, StationStatus, datetime]]) -> None:
    latest: dict[int, tuple[datetime, bool]] = {}
    for station_id, status, received_at in statuses:
        # A Last Will carries no ts: it is as recent as its delivery.
        seen = status.ts or received_at
        if station_id not in latest or seen >= latest[station_id][0]:
            latest[station_id] = (seen, status.online)
    if not latest:
        return
    ids = list(latest)
    conn.execute(
        "UPDATE stations s SET online = v.online, last_seen_at = v.seen"
        " FROM unnest(%s::int8[], %s::timestamptz[], %s::bool[]) AS v(id, seen, online)"
        " WHERE s.id = v.id AND (s.last_seen_at IS NULL OR s.last_seen_at <= v.seen)",
        (ids, [latest[i][0] for i in ids], [latest[i][1] for i in ids]),
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
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM charging_sessions"
        " WHERE battery_serial = ANY(%s) AND ended_at > %s AND started_at < %s"
        # Sessions never merge, so two may accept one sample: the earliest takes it, in
        # every process and every run alike.
        " ORDER BY battery_serial, started_at, id",
        (serials, first - gap, last + gap),
    ).fetchall()
    for row in rows:
        sessions[row[1]].append(Session(*row))
    return sessions


def _add_sample(
    group: list[Session],
    serial: str,
    sample: tuple[datetime, int, int, float, float, float],
    gap: timedelta,
) -> None:
    ts, station_id, slot, soc, energy, temp = sample
    session = next((s for s in group if s.accepts(station_id, slot, ts, gap)), None)
    if session is None:
        session = Session(None, serial, station_id, slot, ts, ts, soc, soc, energy, energy, temp, 0)
        group.append(session)
        session.sample_count = 1
        session.dirty = True
    else:
        session.add(ts, soc, energy, temp)


def roll_up_sessions(conn: Connection, samples: list[tuple[Any, ...]], gap_s: float) -> None:
    """samples: (battery_serial, ts, station_id, slot, soc_pct, energy_kwh, temp_c_max)."""
    if not samples:
        return
    gap = timedelta(seconds=gap_s)
    by_battery: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for sample in samples:
        by_battery[sample[0]].append(sample)
    sessions = _load_sessions(
        conn, list(by_battery), min(s[1] for s in samples), max(s[1] for s in samples), gap
    )
    for serial, battery_samples in by_battery.items():
        for _, ts, station_id, slot, soc, energy, temp in sorted(
            battery_samples, key=lambda s: s[1]
        ):
            _add_sample(sessions[serial], serial, (ts, station_id, slot, soc, energy, temp), gap)
    _save_sessions(conn, sessions)


# The batch's new charging samples as runs (see Run), per battery in time order.
_RUNS = f"""
WITH s AS (
    SELECT battery_serial, station_id, slot, ts, soc_pct, energy_kwh, temp_c_max,
        CASE WHEN ts - lag(ts) OVER w >= %(gap)s THEN 1 ELSE 0 END AS brk
    FROM {NEW_CHARGING_TABLE}
    WINDOW w AS (PARTITION BY battery_serial, station_id, slot ORDER BY ts)
), g AS (
    SELECT s.*, sum(brk) OVER (PARTITION BY battery_serial, station_id, slot ORDER BY ts) AS run
    FROM s
)
SELECT battery_serial, station_id, slot, first_ts, last_ts,
    head[2], tail[2], head[3], tail[3], peak_temp, samples
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


def runs_of(rows: list[list[Any]], gap_s: float) -> list[Run]:
    """_RUNS computed from the writer's own rows, when every one of them was new: rows are
    charging rows (writer.SPECS order: serial, ts, station_id, slot, soc_pct, ..., temp_c_max
    at 9, energy_kwh at 10) sorted by serial and ts. A loop over rows already in memory costs
    a fraction of the two window passes and the grouping in PostgreSQL."""
    gap = timedelta(seconds=gap_s)
    runs: list[Run] = []
    # Per (station, slot) of the current battery: the open run's first row, last row, peak
    # and count.
    open_runs: dict[tuple[int, int], list[Any]] = {}

    def close(state: list[Any]) -> None:
        first, last = state[0], state[1]
        runs.append(
            Run(first[0], first[2], first[3], first[1], last[1], first[4], last[4],
                first[10], last[10], state[2], state[3])
        )  # fmt: skip

    serial = None
    current: list[Any] | None = None
    place = (0, 0)
    for row in rows:
        if row[0] != serial:
            for ended in open_runs.values():
                close(ended)
            open_runs.clear()
            serial = row[0]
            current = None
        # A battery mostly stays in one slot: its run is looked up when it moves.
        if current is None or row[2] != place[0] or row[3] != place[1]:
            place = (row[2], row[3])
            current = open_runs.get(place)
        if current is not None and row[1] - current[1][1] < gap:
            current[1] = row
            if row[9] > current[2]:
                current[2] = row[9]
            current[3] += 1
            continue
        if current is not None:
            close(current)
        current = open_runs[place] = [row, row, row[9], 1]
    for ended in open_runs.values():
        close(ended)
    runs.sort(key=lambda r: (r.battery_serial, r.first_ts))
    return runs


def roll_up_new_charging(
    conn: Connection, gap_s: float, rows: list[list[Any]] | None = None
) -> None:
    """roll_up_sessions for the batch's new charging samples (in NEW_CHARGING_TABLE; rows:
    the same, when the writer has them, see runs_of), a run at a time: a run joins the first
    session that accepts its first sample, or starts one, exactly as its samples would one by
    one, unless an earlier session could take some of them; then, rarely, that run's samples
    go one by one."""
    gap = timedelta(seconds=gap_s)
    if rows is not None:
        runs = runs_of(rows, gap_s)
    else:
        runs = [Run(*row) for row in conn.execute(_RUNS, {"gap": gap}, prepare=True)]
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
            for sample in _run_samples(conn, run, rows):
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
    _save_sessions(conn, sessions)


def _run_samples(conn: Connection, run: Run, rows: list[list[Any]] | None) -> list[tuple[Any, ...]]:
    """(ts, station_id, slot, soc_pct, energy_kwh, temp_c_max) of the run's samples."""
    if rows is not None:
        return [
            (r[1], r[2], r[3], r[4], r[10], r[9])
            for r in rows
            if r[0] == run.battery_serial
            and r[2] == run.station_id
            and r[3] == run.slot
            and run.first_ts <= r[1] <= run.last_ts
        ]
    return conn.execute(
        "SELECT ts, station_id, slot, soc_pct, energy_kwh, temp_c_max"
        f" FROM {NEW_CHARGING_TABLE} WHERE battery_serial = %s AND station_id = %s"
        " AND slot = %s AND ts >= %s AND ts <= %s ORDER BY ts",
        (run.battery_serial, run.station_id, run.slot, run.first_ts, run.last_ts),
    ).fetchall()


def _save_sessions(conn: Connection, sessions: dict[str, list[Session]]) -> None:
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
    all_new_charging: list[list[Any]] | None = None,
    fill_new_charging: Callable[[], None] | None = None,
) -> None:
    """inserted: the new rows of each kind but charging, whose new rows (new_charging of
    them) wait in NEW_CHARGING_TABLE; rows in `inserted` under charging are rolled up too.
    all_new_charging: the charging rows the writer copied, sorted by serial and ts, when
    every one of them was new (see runs_of); then, if fill_new_charging is given, it puts
    them into NEW_CHARGING_TABLE, which only a batch that does not only append needs."""
    update_batteries(conn, inserted)
    if new_charging and all_new_charging is not None:
        update_soc(conn, all_new_charging)
    elif new_charging:
        conn.execute(UPDATE_SOC_FROM_NEW_CHARGING, prepare=True)
    update_stations(conn, statuses)
    roll_up_sessions(conn, inserted.get(RecordKind.charging, []), session_gap_s)
    if new_charging:
        roll_up_new_charging(conn, session_gap_s, all_new_charging)
    update_daily_aggregates(conn, inserted, session_gap_s=session_gap_s)
    if new_charging:
        if all_new_charging is None or not add_appended_charging(
            conn, all_new_charging, session_gap_s
        ):
            if all_new_charging is not None and fill_new_charging is not None:
                fill_new_charging()
            add_new_charging(conn, session_gap_s)
