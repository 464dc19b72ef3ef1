"""How fast the OEM reports answer for 5,000 batteries with a year of history, and that the
answer time does not grow with the raw data behind it.

    python bench/bench_reports.py                 # 5,000 batteries, 365 days, ~20 M + ~20 M samples
    python bench/bench_reports.py --batteries 500 --days 60     # a quick smoke run

Steps, all in one process against a dedicated database (recreated, migrated with
app.core.migrate.upgrade):

  1. registry: 4 OEMs, 3 pack types, N batteries (batteries table, warehouse location);
  2. raw data, generated vectorised with numpy and loaded with psycopg binary COPY straight
     into the partitioned raw tables, month by month in primary-key order (the secondary
     indexes are dropped for the load and rebuilt afterwards): per battery and day a charging
     session of 8 samples 5 minutes apart, 2 vehicle samples a minute apart, 1 health record,
     and a capacity record every 7 days;
  3. battery_daily (and the per-battery rollups, if the schema has them) rebuilt from the raw
     tables with app.rollups.rebuild.rebuild_aggregates, the backfill/repair path (the
     ingest's incremental path gives the same rows: tests/reports/test_report_aggregates.py), then
     clustered and analyzed (settle_aggregates) so that both halves read the same layout;
  4. timings through the FastAPI app in-process (fastapi.testclient, a real admin API key):
     GET /v1/reports/fleet-summary (whole year, and the default 90-day window), the
     batteries report as JSON (every page, 500 a page) and as CSV (streamed); next to a
     baseline: the same fleet energy figure computed naively from charging_samples;
  5. the raw data doubled (a second session, vehicle pair, health record per day and a
     second weekly capacity record, same days, so battery-days stay the same), aggregates
     rebuilt, and step 4 repeated.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

DB_NAME = "swapfleet_bench_reports"
ADMIN_URL = os.environ.get(
    "SWAPFLEET_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
os.environ["SWAPFLEET_DATABASE_URL"] = DB_URL
os.environ.setdefault("SWAPFLEET_ENVIRONMENT", "development")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402

from app.auth.service import create_key  # noqa: E402
from app.core.config import get_settings  # noqa: E402
from app.core.db import get_session_factory  # noqa: E402
from app.core.migrate import upgrade  # noqa: E402
from app.ingest.partitions import create_partitions, month_start  # noqa: E402
from app.main import create_app  # noqa: E402
from app.models import KeyRole  # noqa: E402
from app.rollups.rebuild import rebuild_aggregates  # noqa: E402

log = logging.getLogger("bench_reports")

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
SERIAL_LEN = 8
VIN_LEN = 17
SAMPLES_PER_SESSION = 8
SAMPLE_STEP_S = 300
OEMS = ("BOEM1", "BOEM2", "BOEM3", "BOEM4")
# code, nominal Ah, nominal V, nominal kWh
PACKS = (("BPT-280", 280.0, 512.0, 143.36), ("BPT-100", 100.0, 350.0, 35.0),
         ("BPT-50", 50.0, 72.0, 3.6))  # fmt: skip
SECONDARY_INDEXES = {
    "ix_charging_samples_station_id_ts": "charging_samples (station_id, ts)",
    "ix_vehicle_telemetry_battery_serial_ts": "vehicle_telemetry (battery_serial, ts)",
}


# ---------------------------------------------------------------- binary COPY rows


def _dtype(fields: list[tuple[str, str]]) -> np.dtype[Any]:
    """One binary COPY tuple: field count, then (length, value) per field, big-endian."""
    spec: list[tuple[str, str]] = [("nf", ">i2")]
    for name, kind in fields:
        spec += [(f"len_{name}", ">i4"), (name, kind)]
    return np.dtype(spec)


CHARGING_FIELDS = [("battery_serial", f"S{SERIAL_LEN}"), ("ts", ">i8"), ("station_id", ">i8"),
                   ("slot", ">i4"), ("soc_pct", ">f8"), ("voltage_v", ">f8"),
                   ("current_a", ">f8"), ("power_kw", ">f8"), ("temp_c_min", ">f8"),
                   ("temp_c_max", ">f8"), ("energy_kwh", ">f8")]  # fmt: skip
VEHICLE_FIELDS = [("vin", f"S{VIN_LEN}"), ("ts", ">i8"), ("battery_serial", f"S{SERIAL_LEN}"),
                  ("soc_pct", ">f8"), ("odometer_km", ">f8"), ("pack_voltage_v", ">f8"),
                  ("pack_current_a", ">f8"), ("temp_c_max", ">f8")]  # fmt: skip
HEALTH_FIELDS = [("battery_serial", f"S{SERIAL_LEN}"), ("ts", ">i8"), ("station_id", ">i8"),
                 ("soh_pct", ">f8"), ("internal_resistance_mohm", ">f8"),
                 ("cell_voltage_min_v", ">f8"), ("cell_voltage_max_v", ">f8"),
                 ("temp_c_max", ">f8"), ("cycle_count", ">i4")]  # fmt: skip
CAPACITY_FIELDS = [("battery_serial", f"S{SERIAL_LEN}"), ("ts", ">i8"), ("station_id", ">i8"),
                   ("capacity_kwh", ">f8"), ("capacity_ah", ">f8"), ("method", "S11"),
                   ("temp_c", ">f8")]  # fmt: skip
TABLES = {
    "charging_samples": CHARGING_FIELDS,
    "vehicle_telemetry": VEHICLE_FIELDS,
    "health_records": HEALTH_FIELDS,
    "capacity_records": CAPACITY_FIELDS,
}
DTYPES = {table: _dtype(fields) for table, fields in TABLES.items()}


def empty_rows(table: str, n: int) -> np.ndarray[Any, Any]:
    rows = np.zeros(n, dtype=DTYPES[table])
    fields = TABLES[table]
    rows["nf"] = len(fields)
    for name, kind in fields:
        rows[f"len_{name}"] = np.dtype(kind).itemsize
    return rows


def pg_micros(ts_s: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Unix seconds (float or int) -> microseconds since 2000-01-01, PostgreSQL's epoch."""
    return ((ts_s - PG_EPOCH.timestamp()) * 1_000_000).astype(np.int64)


# ---------------------------------------------------------------- the synthetic fleet


@dataclass
class Fleet:
    n: int
    start: datetime
    days: int
    serials: np.ndarray[Any, Any]
    vins: np.ndarray[Any, Any]
    pack: np.ndarray[Any, Any]
    nominal_ah: np.ndarray[Any, Any]
    nominal_v: np.ndarray[Any, Any]
    soh0: np.ndarray[Any, Any]
    fade_pct_per_day: np.ndarray[Any, Any]
    cycles0: np.ndarray[Any, Any]
    hour: np.ndarray[Any, Any]
    station: np.ndarray[Any, Any]
    hot: np.ndarray[Any, Any]
    spread_c: np.ndarray[Any, Any]
    imbalance_mv_per_day: np.ndarray[Any, Any]


def make_fleet(n: int, days: int, seed: int) -> Fleet:
    rng = np.random.default_rng(seed)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    pack = rng.integers(0, len(PACKS), n)
    fade = rng.lognormal(np.log(3.0), 0.25, n) / 365.0
    # About 1 % of batteries fade 3-4 times faster, run hot, or drift apart: anomalies exist.
    fade[rng.random(n) < 0.01] *= 3.5
    imbalance = np.where(rng.random(n) < 0.01, 1.5, 0.0)
    return Fleet(
        n=n,
        start=start,
        days=days,
        serials=np.array([f"BR{i:06d}".encode() for i in range(n)]),
        vins=np.array([f"LBENCH{i:011d}".encode() for i in range(n)]),
        pack=pack,
        nominal_ah=np.array([p[1] for p in PACKS])[pack],
        nominal_v=np.array([p[2] for p in PACKS])[pack],
        soh0=rng.uniform(90.0, 100.0, n),
        fade_pct_per_day=fade,
        cycles0=rng.uniform(0.0, 800.0, n),
        hour=rng.uniform(0.0, 10.0, n),
        station=rng.integers(1, 51, n),
        hot=rng.random(n) < 0.01,
        spread_c=np.where(rng.random(n) < 0.01, 9.0, 2.0),
        imbalance_mv_per_day=imbalance,
    )


def month_bounds(fleet: Fleet) -> list[tuple[int, int]]:
    """(first day index, day count) of each calendar month the history touches."""
    out: list[tuple[int, int]] = []
    d = 0
    while d < fleet.days:
        day = fleet.start + timedelta(days=d)
        nxt = month_start(day + timedelta(days=32))
        n = min(fleet.days - d, (nxt - day).days)
        out.append((d, n))
        d += n
    return out


def day_grid(fleet: Fleet, b0: int, b1: int, d0: int, nd: int) -> tuple[Any, Any]:
    """Battery index and day index of every (battery, day), battery-major (the PK order)."""
    b = np.repeat(np.arange(b0, b1), nd)
    d = np.tile(np.arange(d0, d0 + nd), b1 - b0)
    return b, d


def charging_rows(
    fleet: Fleet, b: Any, d: Any, rng: np.random.Generator, offset_h: float
) -> np.ndarray[Any, Any]:
    k = SAMPLES_PER_SESSION
    n = len(b) * k
    bb, dd = np.repeat(b, k), np.repeat(d, k)
    step = np.tile(np.arange(k), len(b))
    t0 = fleet.start.timestamp() + d * 86400.0 + (fleet.hour[b] + offset_h) * 3600.0
    ts = np.repeat(t0, k) + step * SAMPLE_STEP_S
    ah = fleet.nominal_ah[bb]
    current = 0.5 * ah * rng.uniform(0.9, 1.1, n)
    volts = fleet.nominal_v[bb] * (1.02 + 0.01 * step / k)
    power = current * volts / 1000.0
    base = 27.0 + 3.0 * np.sin(2 * np.pi * dd / 365.0)
    temp_max = base + np.where(fleet.hot[bb], 20.0, 0.0) + step * 0.6 + rng.normal(0, 0.5, n)
    rows = empty_rows("charging_samples", n)
    rows["battery_serial"] = fleet.serials[bb]
    rows["ts"] = pg_micros(ts)
    rows["station_id"] = fleet.station[bb]
    rows["slot"] = 1 + (bb % 10)
    rows["soc_pct"] = 20.0 + step * 9.0
    rows["voltage_v"] = volts
    rows["current_a"] = current
    rows["power_kw"] = power
    rows["temp_c_max"] = temp_max
    rows["temp_c_min"] = temp_max - fleet.spread_c[bb]
    # The charger's counter restarts with each session and grows with each 5-minute step.
    rows["energy_kwh"] = power * SAMPLE_STEP_S / 3600.0 * (step + 1)
    return rows


def vehicle_rows(
    fleet: Fleet, b: Any, d: Any, rng: np.random.Generator, offset_h: float
) -> np.ndarray[Any, Any]:
    n = len(b) * 2
    bb, dd = np.repeat(b, 2), np.repeat(d, 2)
    step = np.tile(np.arange(2), len(b))
    ts = (fleet.start.timestamp() + dd * 86400.0 + (fleet.hour[bb] + 11.0 + offset_h * 0.2) * 3600.0
          + step * 60.0)  # fmt: skip
    rows = empty_rows("vehicle_telemetry", n)
    rows["vin"] = fleet.vins[bb]
    rows["ts"] = pg_micros(ts)
    rows["battery_serial"] = fleet.serials[bb]
    rows["soc_pct"] = 70.0 - step * 0.5
    rows["odometer_km"] = 10_000.0 + dd * 120.0 + offset_h + step
    rows["pack_voltage_v"] = fleet.nominal_v[bb]
    rows["pack_current_a"] = -0.3 * fleet.nominal_ah[bb] * rng.uniform(0.5, 1.5, n)
    rows["temp_c_max"] = 30.0 + rng.normal(0, 2.0, n) + np.where(fleet.hot[bb], 18.0, 0.0)
    return rows


def soh_at(fleet: Fleet, b: Any, d: Any) -> Any:
    return fleet.soh0[b] - fleet.fade_pct_per_day[b] * d


def health_rows(
    fleet: Fleet, b: Any, d: Any, rng: np.random.Generator, offset_h: float
) -> np.ndarray[Any, Any]:
    n = len(b)
    ts = fleet.start.timestamp() + d * 86400.0 + (fleet.hour[b] + 1.0 + offset_h) * 3600.0
    rows = empty_rows("health_records", n)
    rows["battery_serial"] = fleet.serials[b]
    rows["ts"] = pg_micros(ts)
    rows["station_id"] = fleet.station[b]
    rows["soh_pct"] = np.clip(soh_at(fleet, b, d) + rng.normal(0, 0.3, n), 0, 100)
    rows["internal_resistance_mohm"] = 20.0 * (1 + (100 - soh_at(fleet, b, d)) / 50.0)
    spread = (8.0 + fleet.imbalance_mv_per_day[b] * d) / 1000.0
    rows["cell_voltage_min_v"] = 3.33 - spread / 2
    rows["cell_voltage_max_v"] = 3.33 + spread / 2
    rows["temp_c_max"] = 31.0 + rng.normal(0, 1.0, n)
    rows["cycle_count"] = (fleet.cycles0[b] + d + offset_h / 24.0).astype(np.int32)
    return rows


def capacity_rows(
    fleet: Fleet, b: Any, d: Any, rng: np.random.Generator, offset_h: float
) -> np.ndarray[Any, Any]:
    keep = (d + b) % 7 == 0
    b, d = b[keep], d[keep]
    n = len(b)
    # 30 s after that day's health record, so its cycle count applies.
    ts = (fleet.start.timestamp() + d * 86400.0 + (fleet.hour[b] + 1.0 + offset_h) * 3600.0
          + 30.0)  # fmt: skip
    ah = fleet.nominal_ah[b] * soh_at(fleet, b, d) / 100.0 * rng.normal(1.0, 0.004, n)
    rows = empty_rows("capacity_records", n)
    rows["battery_serial"] = fleet.serials[b]
    rows["ts"] = pg_micros(ts)
    rows["station_id"] = fleet.station[b]
    rows["capacity_ah"] = ah
    rows["capacity_kwh"] = ah * fleet.nominal_v[b] / 1000.0
    rows["method"] = b"full_charge"
    rows["temp_c"] = 25.0
    return rows


GENERATORS: dict[str, Callable[..., np.ndarray[Any, Any]]] = {
    "charging_samples": charging_rows,
    "vehicle_telemetry": vehicle_rows,
    "health_records": health_rows,
    "capacity_records": capacity_rows,
}


def copy_rows(conn: psycopg.Connection[Any], table: str, rows: np.ndarray[Any, Any]) -> None:
    columns = ", ".join(name for name, _ in TABLES[table])
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(HEADER)
        data = memoryview(rows.tobytes())
        chunk = 8 << 20
        for i in range(0, len(data), chunk):
            copy.write(data[i : i + chunk])
        copy.write(TRAILER)


def load(fleet: Fleet, *, offset_h: float, seed: int, battery_chunk: int) -> dict[str, int]:
    """One pass of raw data over the whole history; returns rows per table."""
    counts = dict.fromkeys(TABLES, 0)
    rng = np.random.default_rng(seed)
    with psycopg.connect(DB_URL) as conn:
        for index in SECONDARY_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        months = [fleet.start + timedelta(days=d0) for d0, _ in month_bounds(fleet)]
        for table in TABLES:
            create_partitions(conn, table, months)
        conn.commit()
        for d0, nd in month_bounds(fleet):
            for b0 in range(0, fleet.n, battery_chunk):
                b, d = day_grid(fleet, b0, min(fleet.n, b0 + battery_chunk), d0, nd)
                for table, generate in GENERATORS.items():
                    rows = generate(fleet, b, d, rng, offset_h)
                    copy_rows(conn, table, rows)
                    counts[table] += len(rows)
            conn.commit()
            log.info("event=month_loaded first_day=%s rows=%d", d0, sum(counts.values()))
        for index, target in SECONDARY_INDEXES.items():
            conn.execute(f"CREATE INDEX {index} ON {target}")
        conn.commit()
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")
    return counts


# ---------------------------------------------------------------- registry and keys


def recreate_database() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (DB_NAME,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    upgrade(DB_URL)


def register(fleet: Fleet) -> None:
    with psycopg.connect(DB_URL) as conn:
        conn.execute(
            "INSERT INTO organizations (code, name, role) VALUES"
            " ('BOPS', 'Bench operator', 'operator'), ('BOWN', 'Bench owner', 'owner')"
        )
        for code in OEMS:
            conn.execute(
                "INSERT INTO organizations (code, name, role) VALUES (%s, %s, 'oem')",
                (code, f"Bench OEM {code}"),
            )
        for code, ah, volts, kwh in PACKS:
            conn.execute(
                "INSERT INTO pack_types (code, name, chemistry, nominal_energy_kwh,"
                " nominal_capacity_ah, nominal_voltage_v) VALUES (%s, %s, 'LFP', %s, %s, %s)",
                (code, f"Bench pack {code}", kwh, ah, volts),
            )
        oem_ids = [
            conn.execute("SELECT id FROM organizations WHERE code = %s", (c,)).fetchone()[0]  # type: ignore[index]
            for c in OEMS
        ]
        pack_ids = [
            conn.execute("SELECT id FROM pack_types WHERE code = %s", (p[0],)).fetchone()[0]  # type: ignore[index]
            for p in PACKS
        ]
        owner = conn.execute("SELECT id FROM organizations WHERE code = 'BOWN'").fetchone()[0]  # type: ignore[index]
        made = fleet.start.date() - timedelta(days=200)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY batteries (serial, pack_type_id, owner_id, oem_id, manufactured_on, state,"
                " location_kind, soc_pct, soh_pct, equivalent_full_cycles) FROM STDIN"
            ) as copy,
        ):
            for i in range(fleet.n):
                copy.write_row(
                    (
                        fleet.serials[i].decode(),
                        pack_ids[int(fleet.pack[i])],
                        owner,
                        oem_ids[i % len(oem_ids)],
                        made - timedelta(days=i % 300),
                        "in_service",
                        "warehouse",
                        80.0,
                        round(float(soh_at(fleet, i, fleet.days)), 1),
                        round(float(fleet.cycles0[i] + fleet.days), 1),
                    )
                )
        conn.commit()


def admin_key() -> str:
    with get_session_factory().begin() as session:
        _, raw = create_key(session, role=KeyRole.admin, organization_code=None, name="bench")
    return raw


def rebuild(fleet: Fleet) -> float:
    started = time.perf_counter()
    with get_session_factory().begin() as session:
        rebuild_aggregates(
            session,
            fleet.start.date(),
            (fleet.start + timedelta(days=fleet.days - 1)).date(),
            session_gap_s=get_settings().ingest_session_gap_s,
        )
    settle_aggregates()
    return time.perf_counter() - started


def settle_aggregates() -> None:
    """Both halves are timed on the same physical layout, so that their ratio measures the
    raw data and not the rebuild's churn: a rebuild deletes every battery_daily row and
    upserts it again from four sources, which left the table at 2 GB for 1.8 M rows (four
    versions of each) after the second rebuild, its rows scattered. CLUSTER rewrites both
    aggregate tables compactly in primary-key order. ANALYZE, because autovacuum may be off
    (it is on this machine) and the planner would guess 957 batteries for 5,000."""
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("CLUSTER battery_daily USING pk_battery_daily")
        conn.execute("CLUSTER battery_monthly USING pk_battery_monthly")
        conn.execute("VACUUM ANALYZE battery_daily, battery_monthly, batteries")


# ---------------------------------------------------------------- timing


@dataclass
class Timing:
    samples: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    def text(self) -> str:
        return (
            f"p50 {self.p50 * 1000:8.1f} ms  p95 {self.p95 * 1000:8.1f} ms"
            f"  (n={len(self.samples)}, min {min(self.samples) * 1000:.1f} ms)"
        )


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Timing, Any]:
    fn()  # warm-up: plans cached, pages in shared buffers
    samples = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - started)
    return Timing(samples), result


NAIVE_ENERGY = """
SELECT sum(CASE WHEN cont AND energy_kwh >= p_energy THEN energy_kwh - p_energy
                ELSE energy_kwh END)
FROM (
    SELECT energy_kwh, p_energy,
        COALESCE(p_station = station_id AND p_slot = slot
                 AND extract(epoch FROM ts - p_ts) < %(gap)s, false) AS cont
    FROM (
        SELECT ts, station_id, slot, energy_kwh,
            lag(ts) OVER w AS p_ts, lag(station_id) OVER w AS p_station,
            lag(slot) OVER w AS p_slot, lag(energy_kwh) OVER w AS p_energy
        FROM charging_samples WHERE ts >= %(lo)s AND ts < %(hi)s
        WINDOW w AS (PARTITION BY battery_serial ORDER BY ts)
    ) lagged
) paired
"""


def measure(client: TestClient, fleet: Fleet, repeat: int, label: str) -> dict[str, Any]:
    first = fleet.start.date()
    last = (fleet.start + timedelta(days=fleet.days - 1)).date()
    year = {"from": first.isoformat(), "to": last.isoformat()}
    out: dict[str, Any] = {}

    def summary(params: dict[str, str]) -> Callable[[], Any]:
        def call() -> Any:
            r = client.get("/v1/reports/fleet-summary", params=params)
            assert r.status_code == 200, r.text[:300]
            return r.json()

        return call

    t, body = timed(summary(year), repeat)
    out["summary_year"] = t
    out["summary_body"] = body
    t, _ = timed(summary({"to": last.isoformat()}), repeat)
    out["summary_90d"] = t
    t, _ = timed(summary({**year, "oem_code": OEMS[0]}), repeat)
    out["summary_oem"] = t

    def summary_cold() -> Any:
        # What the first summary of a window after new data costs: the anomaly snapshot is
        # recomputed (cohort fits over every battery's window).
        with psycopg.connect(DB_URL) as conn:
            conn.execute("DELETE FROM report_anomaly_snapshots")
        return summary(year)()

    t, _ = timed(summary_cold, max(3, repeat // 4))
    out["summary_year_cold"] = t

    def json_pages() -> int:
        n, cursor = 0, None
        while True:
            params: dict[str, Any] = {**year, "limit": 500}
            if cursor:
                params["cursor"] = cursor
            r = client.get("/v1/reports/batteries", params=params)
            assert r.status_code == 200, r.text[:300]
            page = r.json()
            n += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return n

    t, rows = timed(json_pages, max(3, repeat // 4))
    assert rows == fleet.n, rows
    out["batteries_json"] = t

    def csv_stream() -> int:
        lines = 0
        with client.stream(
            "GET", "/v1/reports/batteries", params=year, headers={"Accept": "text/csv"}
        ) as r:
            assert r.status_code == 200
            for chunk in r.iter_text():
                lines += chunk.count("\n")
        return lines - 1

    t, rows = timed(csv_stream, max(3, repeat // 4))
    assert rows == fleet.n, rows
    out["batteries_csv"] = t

    params = {
        "lo": datetime.combine(first, datetime.min.time(), tzinfo=UTC),
        "hi": datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
        "gap": get_settings().ingest_session_gap_s,
    }

    def naive() -> float:
        with psycopg.connect(DB_URL) as conn:
            conn.execute("SET max_parallel_workers_per_gather = 2")
            return float(conn.execute(NAIVE_ENERGY, params).fetchone()[0])  # type: ignore[index]

    t, energy = timed(naive, 2)
    out["naive_energy"] = t
    out["naive_energy_kwh"] = energy
    summary_energy = out["summary_body"]["energy_charged_kwh"]
    out["energy_agrees"] = abs(summary_energy - energy) <= 1e-6 * max(1.0, energy)
    log.info("event=measured label=%s", label)
    print_block(label, out, summary_energy)
    return out


def print_block(label: str, out: dict[str, Any], summary_energy: float) -> None:
    lines = [
        f"--- {label}",
        f"fleet summary, whole year, all OEMs      {out['summary_year'].text()}",
        f"fleet summary, default 90-day window     {out['summary_90d'].text()}",
        f"fleet summary, whole year, one OEM       {out['summary_oem'].text()}",
        f"fleet summary, year, snapshot recomputed {out['summary_year_cold'].text()}",
        f"batteries report, JSON, every page (500) {out['batteries_json'].text()}",
        f"batteries report, CSV streamed           {out['batteries_csv'].text()}",
        f"baseline: fleet energy from raw samples  {out['naive_energy'].text()}",
        f"energy charged: summary {summary_energy:,.1f} kWh, raw {out['naive_energy_kwh']:,.1f} kWh"
        f" ({'agree' if out['energy_agrees'] else 'DIFFER'})",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def table_counts() -> dict[str, int]:
    with psycopg.connect(DB_URL) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in (*TABLES, "battery_daily")
        }


def measure_existing(n: int, days: int, seed: int, repeat: int, rebuild_first: bool) -> None:
    """Times the reports on a database an earlier run loaded (same --batteries/--days/--seed,
    loaded today), after migrating it to head; optionally rebuilds the aggregates first."""
    upgrade(DB_URL)
    fleet = make_fleet(n, days, seed)
    if rebuild_first:
        sys.stdout.write(f"rebuild_aggregates: {rebuild(fleet):.0f} s\n")
    else:
        with psycopg.connect(DB_URL, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE battery_daily, battery_monthly, batteries")
    counts = table_counts()
    raw = sum(v for k, v in counts.items() if k in TABLES)
    sys.stdout.write(f"existing database: {counts}\n")
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {admin_key()}"
        measure(client, fleet, repeat, f"existing: {raw:,} raw samples")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batteries", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--battery-chunk", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--existing",
        action="store_true",
        help="measure the already loaded database once (migrated to head), no load",
    )
    parser.add_argument(
        "--rebuild-first",
        action="store_true",
        help="with --existing: rebuild the aggregates from the raw tables before measuring",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # One line per request would drown the figures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    get_settings.cache_clear()

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    total = time.perf_counter()
    if args.existing:
        measure_existing(args.batteries, args.days, args.seed, args.repeat, args.rebuild_first)
        say(f"total {time.perf_counter() - total:.0f} s")
        return
    recreate_database()
    fleet = make_fleet(args.batteries, args.days, args.seed)
    register(fleet)
    key = admin_key()
    say(f"fleet: {fleet.n} batteries, {fleet.days} days from {fleet.start.date()}")

    started = time.perf_counter()
    counts = load(fleet, offset_h=0.0, seed=args.seed, battery_chunk=args.battery_chunk)
    load_s = time.perf_counter() - started
    raw = sum(counts.values())
    say(f"load 1: {raw:,} raw rows {counts} in {load_s:.0f} s ({raw / load_s:,.0f} rows/s)")
    rebuild_s = rebuild(fleet)
    say(f"rebuild_aggregates 1: {rebuild_s:.0f} s; rows now {table_counts()}")

    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        first = measure(client, fleet, args.repeat, f"raw data x1: {raw:,} samples")

        started = time.perf_counter()
        counts2 = load(fleet, offset_h=12.0, seed=args.seed + 1, battery_chunk=args.battery_chunk)
        load_s = time.perf_counter() - started
        raw2 = raw + sum(counts2.values())
        say(f"load 2: {sum(counts2.values()):,} more raw rows in {load_s:.0f} s")
        rebuild_s = rebuild(fleet)
        say(f"rebuild_aggregates 2: {rebuild_s:.0f} s; rows now {table_counts()}")
        second = measure(client, fleet, args.repeat, f"raw data x2: {raw2:,} samples")

    say("--- ratio x2 / x1 (p50)")
    for name in ("summary_year", "summary_90d", "summary_oem", "summary_year_cold",
                 "batteries_json", "batteries_csv", "naive_energy"):  # fmt: skip
        say(f"{name:16s} {second[name].p50 / first[name].p50:5.2f}")
    say(f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
