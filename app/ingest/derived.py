"""State derived from telemetry, updated once per batch from the rows that were new.

Only newly inserted rows feed it, so a redelivered record cannot count twice.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from app.ingest.aggregates import update_daily_aggregates
from devices.contract import RecordKind, StationStatus

Connection = psycopg.Connection[Any]


def _latest(rows: list[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """The newest row per battery serial (rows start with serial, ts)."""
    latest: dict[str, tuple[Any, ...]] = {}
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
    soc = _latest(soc_rows)
    if soc:
        rows = list(soc.values())
        conn.execute(
            "UPDATE batteries b SET soc_pct = v.soc, readings_at = v.ts"
            " FROM unnest(%s::text[], %s::timestamptz[], %s::float8[]) AS v(serial, ts, soc)"
            " WHERE b.serial = v.serial AND (b.readings_at IS NULL OR b.readings_at <= v.ts)",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )


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


_SESSION_COLUMNS = (
    "id, battery_serial, station_id, slot, started_at, ended_at, soc_from_pct, soc_to_pct,"
    " energy_start_kwh, energy_end_kwh, peak_temp_c, sample_count"
)


def roll_up_sessions(conn: Connection, samples: list[tuple[Any, ...]], gap_s: float) -> None:
    """samples: (battery_serial, ts, station_id, slot, soc_pct, energy_kwh, temp_c_max)."""
    if not samples:
        return
    gap = timedelta(seconds=gap_s)
    by_battery: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for sample in samples:
        by_battery[sample[0]].append(sample)
    sessions: dict[str, list[Session]] = defaultdict(list)
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM charging_sessions"
        " WHERE battery_serial = ANY(%s) AND ended_at > %s AND started_at < %s",
        (
            list(by_battery),
            min(s[1] for s in samples) - gap,
            max(s[1] for s in samples) + gap,
        ),
    ).fetchall()
    for row in rows:
        sessions[row[1]].append(Session(*row))
    for serial, battery_samples in by_battery.items():
        for _, ts, station_id, slot, soc, energy, temp in sorted(
            battery_samples, key=lambda s: s[1]
        ):
            session = next(
                (s for s in sessions[serial] if s.accepts(station_id, slot, ts, gap)), None
            )
            if session is None:
                session = Session(
                    None, serial, station_id, slot, ts, ts, soc, soc, energy, energy, temp, 0
                )
                sessions[serial].append(session)
                session.sample_count = 1
                session.dirty = True
            else:
                session.add(ts, soc, energy, temp)
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
) -> None:
    update_batteries(conn, inserted)
    update_stations(conn, statuses)
    roll_up_sessions(conn, inserted.get(RecordKind.charging, []), session_gap_s)
    update_daily_aggregates(conn, inserted, session_gap_s=session_gap_s)
