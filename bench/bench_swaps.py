"""Swaps per second through the REST API and battery reads, each next to a baseline measured
in the same run (issue 12).

    python bench/bench_swaps.py                  # the whole run, about 2 minutes
    python bench/bench_swaps.py --workers 1      # pass --workers to `swapfleet api`
    python bench/bench_swaps.py --no-docs        # print only, leave docs/benchmarks.md alone

Steps, against a dedicated database (recreated, migrated with app.core.migrate.upgrade):

  1. load, by set-based SQL: 1 operator, 2 OEMs (3/4 of the vehicles are the first one's, as
     a real morning peak is many stations of one OEM), 1,000 stations of 8 slots, 8,000
     vehicles, 16,000 batteries (8,000 charged in the slots, 8,000 depleted in the
     vehicles), their registration custody events and two API keys (operator, admin);
  2. S: the swap transaction as plain SQL over psycopg (no web framework), the statements the
     swap's rules need, 16 threads, each transaction a different vehicle, the backend
     allocating the battery with SKIP LOCKED; reloaded afterwards;
     S1: the same swaps as the three statements the server runs for one since the swap is a
     database function (the Idempotency-Key claim, swapfleet_record_swap, the stored
     response): the ceiling of W without a web framework; reloaded afterwards;
  3. a real server process started as users start it (`swapfleet api`), then with `wrk`
     (Debian's C load generator, Lua scripts) at 16 connections:
     H: GET /healthz; R: GET /v1/batteries/{serial}, random serials;
     W: POST /v1/swaps, distinct bodies and Idempotency-Keys, each request a different
     vehicle at its own station, the backend allocates;
  4. checks of what W did: every 201 is a stored swap, no battery handed out twice, every
     battery in exactly one place, custody history matches the swaps.

One vehicle swaps once per load (it then carries a battery the script did not choose), so a
phase must not outrun the 8,000 vehicles: the script says so if it did.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.migrate import upgrade  # noqa: E402

DB_NAME = "swapfleet_bench_swaps"
ADMIN_URL = os.environ.get(
    "SWAPFLEET_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
STATIONS = 1000
SLOTS = 8
VEHICLES = STATIONS * SLOTS
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_BEGIN = "<!-- bench_swaps: latest run, written by bench/bench_swaps.py -->"
DOCS_END = "<!-- bench_swaps: end -->"


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- the network


def recreate_database() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (DB_NAME,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    upgrade(DB_URL)


def vin(v: int) -> str:
    return f"BV{v:015d}"


def vehicle_battery(v: int) -> str:
    return f"BVB{v:06d}"


def slot_battery(i: int) -> str:
    return f"BSB{i:06d}"


def station_code(s: int) -> str:
    return f"BST{s:04d}"


LOAD = [
    "INSERT INTO organizations (code, name, role) VALUES ('BOP', 'Bench operator', 'operator'),"
    " ('BOEMA', 'Bench OEM A', 'oem'), ('BOEMB', 'Bench OEM B', 'oem'),"
    " ('BOWN', 'Bench owner', 'owner')",
    "INSERT INTO pack_types (code, name, chemistry, nominal_energy_kwh, nominal_capacity_ah,"
    " nominal_voltage_v) VALUES ('BPT', 'Bench pack', 'LFP', 141, 280, 512)",
    "INSERT INTO vehicle_models (oem_id, code, name)"
    " SELECT id, code || '-M', 'Bench model' FROM organizations WHERE role = 'oem'",
    "INSERT INTO vehicle_model_pack_types (vehicle_model_id, pack_type_id)"
    " SELECT vm.id, pt.id FROM vehicle_models vm, pack_types pt",
    f"INSERT INTO stations (operator_id, code, name, latitude, longitude, timezone, status,"
    f" target_soc_pct)"
    f" SELECT op.id, 'BST' || lpad(g::text, 4, '0'), 'Bench station', 31.2, 121.4,"
    f" 'Asia/Shanghai', 'active', 90"
    f" FROM generate_series(0, {STATIONS - 1}) g, organizations op WHERE op.code = 'BOP'",
    f"INSERT INTO slots (station_id, number, enabled)"
    f" SELECT s.id, n, true FROM stations s, generate_series(1, {SLOTS}) n",
    # Three vehicles in four are OEM A's: its swaps are the network's morning peak.
    f"INSERT INTO vehicles (vin, oem_id, model_id)"
    f" SELECT 'BV' || lpad(g::text, 15, '0'), vm.oem_id, vm.id"
    f" FROM generate_series(0, {VEHICLES - 1}) g JOIN vehicle_models vm"
    f" ON vm.code = CASE WHEN g % 4 = 3 THEN 'BOEMB-M' ELSE 'BOEMA-M' END",
    # Charged batteries: battery i in slot (i % 8) + 1 of station i / 8.
    f"INSERT INTO batteries (serial, pack_type_id, owner_id, oem_id, state, location_kind,"
    f" slot_id, soc_pct, soh_pct, equivalent_full_cycles)"
    f" SELECT 'BSB' || lpad(g::text, 6, '0'), pt.id, own.id, oem.id, 'in_service', 'slot',"
    f" sl.id, 95 + g % 5, 90 + g % 10, g % 300"
    f" FROM generate_series(0, {VEHICLES - 1}) g"
    f" JOIN stations st ON st.code = 'BST' || lpad((g / {SLOTS})::text, 4, '0')"
    f" JOIN slots sl ON sl.station_id = st.id AND sl.number = g % {SLOTS} + 1,"
    f" pack_types pt, organizations own, organizations oem"
    f" WHERE own.code = 'BOWN' AND oem.code = 'BOEMA'",
    "INSERT INTO batteries (serial, pack_type_id, owner_id, oem_id, state, location_kind,"
    " vehicle_id, soc_pct, soh_pct, equivalent_full_cycles)"
    " SELECT 'BVB' || substr(v.vin, 12), pt.id, own.id, v.oem_id, 'in_service', 'vehicle',"
    " v.id, 15, 92, 100"
    " FROM vehicles v, pack_types pt, organizations own WHERE own.code = 'BOWN'",
    "INSERT INTO custody_events (battery_id, at, cause, from_kind, to_kind, to_slot_id,"
    " to_vehicle_id, state_from, state_to)"
    " SELECT id, now() - interval '1 day', 'registered', NULL, location_kind, slot_id,"
    " vehicle_id, NULL, state FROM batteries",
]


@dataclass
class Keys:
    operator: str
    admin: str
    operator_id: int


def load_network() -> tuple[Keys, float]:
    started = time.perf_counter()
    with psycopg.connect(DB_URL) as conn:
        tables = conn.execute(
            "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ).fetchone()
        assert tables is not None
        conn.execute(f"TRUNCATE {tables[0]} RESTART IDENTITY CASCADE")
        for statement in LOAD:
            conn.execute(statement)
        raw = {role: "sfk_bench" + secrets.token_urlsafe(24) for role in ("operator", "admin")}
        for role, key in raw.items():
            conn.execute(
                "INSERT INTO api_keys (key_hash, prefix, name, role, organization_id)"
                " SELECT %s, %s, 'bench', %s,"
                " CASE WHEN %s = 'admin' THEN NULL ELSE"
                " (SELECT id FROM organizations WHERE code = 'BOP') END",
                (hashlib.sha256(key.encode()).hexdigest(), key[:10], role, role),
            )
        row = conn.execute("SELECT id FROM api_keys WHERE role = 'operator'").fetchone()
        assert row is not None
        conn.commit()
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return Keys(raw["operator"], raw["admin"], int(row[0])), time.perf_counter() - started


# ---------------------------------------------------------------- CPU accounting


def cpu_times(pids: list[int]) -> dict[int, float]:
    times = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        times[pid] = t.user + t.system
    return times


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds of the processes alive at both ends (a pool may close a connection)."""
    return sum(after[pid] - before[pid] for pid in before if pid in after)


def backend_pids() -> list[int]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (DB_NAME,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- S: plain SQL baseline

SQL = {
    "claim": "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
    "replay": "SELECT request_hash, status_code, response_body FROM idempotency_records"
    " WHERE api_key_id = %s AND key = %s",
    "station": "SELECT id, operator_id, status, target_soc_pct FROM stations WHERE code = %s",
    "vehicle": "SELECT id, model_id FROM vehicles WHERE vin = %s FOR UPDATE",
    "removed": "SELECT id, vehicle_id, readings_at FROM batteries WHERE serial = %s FOR UPDATE",
    "compatible": "SELECT pack_type_id FROM vehicle_model_pack_types WHERE vehicle_model_id = %s",
    "allocate": "SELECT b.id, b.serial, b.slot_id, b.soc_pct, b.soh_pct FROM batteries b"
    " JOIN slots s ON s.id = b.slot_id"
    " WHERE s.station_id = %s AND s.enabled AND b.state = 'in_service'"
    " AND b.pack_type_id = ANY(%s) AND b.soc_pct >= %s"
    " AND (b.soh_pct IS NULL OR b.soh_pct >= %s)"
    " ORDER BY b.soc_pct DESC, b.equivalent_full_cycles, b.serial"
    " LIMIT 1 FOR UPDATE OF b SKIP LOCKED",
    "swap": "INSERT INTO swap_events (id, station_id, vehicle_id, vin, removed_battery_id,"
    " removed_battery_serial, removed_soc_pct, removed_soh_pct, removed_to_slot_id,"
    " installed_battery_id, installed_battery_serial, installed_soc_pct, installed_soh_pct,"
    " installed_from_slot_id, started_at, finished_at, outcome)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'completed')"
    " RETURNING created_at",
    "leave_slot": "UPDATE batteries SET location_kind = 'in_transit', slot_id = NULL,"
    " updated_at = now() WHERE id = %s",
    "to_slot": "UPDATE batteries SET location_kind = 'slot', slot_id = %s, vehicle_id = NULL,"
    " soc_pct = %s, soh_pct = %s, readings_at = %s, updated_at = now() WHERE id = %s",
    "to_vehicle": "UPDATE batteries SET location_kind = 'vehicle', vehicle_id = %s,"
    " readings_at = %s, updated_at = now() WHERE id = %s",
    "custody": "INSERT INTO custody_events (battery_id, at, cause, from_kind, from_slot_id,"
    " from_vehicle_id, to_kind, to_slot_id, to_vehicle_id, state_from, state_to, swap_id,"
    " api_key_id) VALUES"
    " (%s, %s, 'swap', 'vehicle', NULL, %s, 'slot', %s, NULL, 'in_service', 'in_service', %s, %s),"
    " (%s, %s, 'swap', 'slot', %s, NULL, 'vehicle', NULL, %s, 'in_service', 'in_service', %s, %s)",
    "store": "INSERT INTO idempotency_records (api_key_id, key, request_hash, status_code,"
    " response_body) VALUES (%s, %s, %s, 201, %s)",
}
RESPONSE_BODY = "x" * 560  # about the size of a swap's JSON

# S1: the statements the server runs for W since the swap became one function call.
SQL_FUNCTION = {
    "claim": "SELECT * FROM swapfleet_claim_idempotency(%s, %s)",
    "record": "SELECT status, outcome FROM swapfleet_record_swap("
    "%s, %s, %s, %s, %s, NULL, NULL, NULL, %s, NULL, %s, 70.0, %s, true, %s, NULL)",
}


def sql_swap_function(
    conn: psycopg.Connection[Any], keys: Keys, v: int, tag: str, operator_org_id: int
) -> bool:
    key = f"{tag}-{v}"
    now = datetime.now(UTC)
    with conn.transaction():
        if conn.execute(SQL_FUNCTION["claim"], (keys.operator_id, key)).fetchone() is not None:
            return False
        row = conn.execute(
            SQL_FUNCTION["record"],
            (station_code(v % STATIONS), vin(v), vehicle_battery(v), 15.0, 92.0, now, now,
             keys.operator_id, operator_org_id),
        ).fetchone()  # fmt: skip
        if row is None or row[1] != "completed":
            return False
        conn.execute(SQL["store"], (keys.operator_id, key, "0" * 64, RESPONSE_BODY))
    return True


def sql_swap(conn: psycopg.Connection[Any], keys: Keys, v: int, tag: str) -> bool:
    key = f"{tag}-{v}"
    now = datetime.now(UTC)
    with conn.transaction():
        conn.execute(SQL["claim"], (f"{keys.operator_id}:{key}",))
        if conn.execute(SQL["replay"], (keys.operator_id, key)).fetchone() is not None:
            return False
        station = conn.execute(SQL["station"], (station_code(v % STATIONS),)).fetchone()
        assert station is not None
        assert station[1] == keys.operator_id
        vehicle = conn.execute(SQL["vehicle"], (vin(v),)).fetchone()
        assert vehicle is not None
        removed = conn.execute(SQL["removed"], (vehicle_battery(v),)).fetchone()
        assert removed is not None
        assert removed[1] == vehicle[0]
        packs = [r[0] for r in conn.execute(SQL["compatible"], (vehicle[1],))]
        installed = conn.execute(SQL["allocate"], (station[0], packs, station[3], 70.0)).fetchone()
        if installed is None:
            return False
        swap_id = uuid.uuid4()
        conn.execute(
            SQL["swap"],
            (swap_id, station[0], vehicle[0], vin(v), removed[0], vehicle_battery(v), 15.0,
             92.0, installed[2], installed[0], installed[1], installed[3], installed[4],
             installed[2], now, now),
        )  # fmt: skip
        conn.execute(SQL["leave_slot"], (installed[0],))
        conn.execute(SQL["to_slot"], (installed[2], 15.0, 92.0, now, removed[0]))
        conn.execute(SQL["to_vehicle"], (vehicle[0], now, installed[0]))
        conn.execute(
            SQL["custody"],
            (removed[0], now, vehicle[0], installed[2], swap_id, keys.operator_id,
             installed[0], now, installed[2], vehicle[0], swap_id, keys.operator_id),
        )  # fmt: skip
        conn.execute(SQL["store"], (keys.operator_id, key, "0" * 64, RESPONSE_BODY))
    return True


@dataclass
class Phase:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    note: str = ""


def run_sql(keys: Keys, threads: int, duration: float, *, function: bool = False) -> Phase:
    """The swap transaction without a web framework: 16 threads, one connection each; as
    the statements of its rules (S) or as the function call the server makes (S1)."""
    tag = "sql" + secrets.token_hex(4)
    with psycopg.connect(DB_URL) as conn:
        org = conn.execute("SELECT id FROM organizations WHERE code = 'BOP'").fetchone()
        assert org is not None

    def swap(conn: psycopg.Connection[Any], v: int) -> bool:
        if function:
            return sql_swap_function(conn, keys, v, tag, org[0])
        return sql_swap(conn, keys, v, tag)

    next_vehicle = iter(range(VEHICLES))
    lock = threading.Lock()
    latencies: list[float] = []
    done = threading.Event()
    exhausted = False
    conns = [psycopg.connect(DB_URL) for _ in range(threads)]
    backends = backend_pids()

    def work(conn: psycopg.Connection[Any]) -> None:
        nonlocal exhausted
        mine: list[float] = []
        while not done.is_set():
            with lock:
                v = next(next_vehicle, None)
            if v is None:
                exhausted = True
                break
            t0 = time.perf_counter()
            if swap(conn, v):
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    me = psutil.Process()
    cpu0, pg0 = me.cpu_times(), cpu_times(backends)
    workers = [threading.Thread(target=work, args=(c,)) for c in conns]
    started = time.perf_counter()
    for w in workers:
        w.start()
    # Until the duration is over or every vehicle has swapped, whichever comes first: a rate
    # over idle seconds after the last vehicle would understate it.
    deadline = started + duration
    for w in workers:
        w.join(max(0.0, deadline - time.perf_counter()))
    done.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    cpu1, pg1 = me.cpu_times(), cpu_times(backends)
    for c in conns:
        c.close()
    latencies.sort()
    return Phase(
        "S1 the swap function over psycopg" if function else "S plain SQL swap",
        len(latencies) / elapsed,
        1000 * latencies[len(latencies) // 2],
        1000 * latencies[int(len(latencies) * 0.99)],
        len(latencies),
        elapsed,
        cpu={
            "client": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
            "postgres": cpu_used(pg0, pg1) / elapsed,
        },
        note="vehicles exhausted: shorten --duration" if exhausted else "",
    )


# ---------------------------------------------------------------- the server and wrk

LUA_COMMON = r"""
local threads = {}
local n_threads = 0
function setup(thread)
  thread:set("tid", n_threads)
  n_threads = n_threads + 1
  table.insert(threads, thread)
end
statuses = {}
ids = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 201 then
    ids[#ids + 1] = string.match(body, '"id":"([0-9a-f%-]+)"')
  end
end
local function json_escape(s) return '"' .. tostring(s) .. '"' end
function done(summary, latency, requests)
  local all = {}
  local ids_file = io.open(OUT .. ".ids", "w")
  local exhausted = 0
  for _, thread in ipairs(threads) do
    local st = thread:get("statuses")
    for k, v in pairs(st) do all[k] = (all[k] or 0) + v end
    local tids = thread:get("ids")
    for _, id in ipairs(tids) do ids_file:write(id, "\n") end
    exhausted = exhausted + (thread:get("exhausted") or 0)
  end
  ids_file:close()
  local parts = {}
  for k, v in pairs(all) do parts[#parts + 1] = json_escape(k) .. ":" .. v end
  local f = io.open(OUT, "w")
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%f,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"exhausted":%d,"statuses":{%s}}',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    exhausted, table.concat(parts, ",")))
  f:close()
end
"""

LUA_HEALTHZ = r"""
exhausted = 0
function request() return wrk.format("GET", "/healthz") end
"""

LUA_READ = r"""
exhausted = 0
function init(args) math.randomseed(tid * 7919 + os.time()) end
function request()
  local i = math.random(0, N - 1)
  local serial
  if math.random(0, 1) == 0 then serial = string.format("BSB%06d", i)
  else serial = string.format("BVB%06d", i) end
  return wrk.format("GET", "/v1/batteries/" .. serial,
    {["Authorization"] = "Bearer " .. KEY})
end
"""

LUA_SWAP = r"""
exhausted = 0
local i
function init(args) i = tid end
function request()
  local v = i
  i = i + N_THREADS
  if v >= N then
    -- Out of vehicles: counted, and the run is reported as too long for its load.
    exhausted = exhausted + 1
    return wrk.format("GET", "/healthz")
  end
  local body = string.format(
    '{"station_code":"BST%04d","vin":"BV%015d","removed_battery_serial":"BVB%06d",' ..
    '"removed_soc_pct":15.0,"removed_soh_pct":92.0}', v % STATIONS, v, v)
  return wrk.format("POST", "/v1/swaps", {
    ["Authorization"] = "Bearer " .. KEY,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = TAG .. "-" .. v,
  }, body)
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`swapfleet api` in its own process group, configured by SWAPFLEET_* variables."""

    def __init__(self, port: int, workers: int | None) -> None:
        env = dict(os.environ)
        env.update(
            SWAPFLEET_DATABASE_URL=DB_URL,
            SWAPFLEET_ENVIRONMENT="production",
            SWAPFLEET_LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
        )
        argv = [shutil.which("swapfleet") or "swapfleet", "api", "--port", str(port)]
        if workers is not None:
            argv += ["--workers", str(workers)]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(argv, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"swapfleet api exited with {self.proc.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError("swapfleet api did not answer /healthz within 60 s")
        # Every worker up: a few requests land on each.
        time.sleep(2)

    def pids(self) -> list[int]:
        proc = psutil.Process(self.proc.pid)
        return [proc.pid] + [c.pid for c in proc.children(recursive=True)]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run_wrk(
    name: str,
    server: Server,
    script: str,
    params: dict[str, Any],
    *,
    connections: int,
    threads: int,
    duration: float,
    workdir: Path,
    profile: Path | None = None,
) -> tuple[Phase, list[str]]:
    result = workdir / f"{name.split()[0]}.json"
    header = "".join(
        f"{k} = {json.dumps(v) if isinstance(v, str) else v}\n"
        for k, v in {**params, "OUT": str(result), "N_THREADS": threads}.items()
    )
    lua = workdir / f"{name.split()[0]}.lua"
    lua.write_text(header + LUA_COMMON + script)
    server_pids = server.pids()
    backends = backend_pids()
    s0, pg0 = cpu_times(server_pids), cpu_times(backends)
    proc = subprocess.Popen(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(duration)}s",
         "--timeout", "10s", "-s", str(lua), server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    spy = None
    if profile is not None:
        # Sampled stacks of every worker on the CPU (see profile_summary).
        spy = subprocess.Popen(
            ["py-spy", "record", "--subprocesses", "--nonblocking", "-r", "100",
             "-f", "raw", "-o", str(profile), "-d", str(int(duration) - 1),
             "-p", str(server.proc.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    assert proc.stdout is not None
    wrk_output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    if spy is not None:
        spy.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)
    s1, pg1 = cpu_times(server_pids), cpu_times(backends)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {wrk_output}")
    data = json.loads(result.read_text())
    seconds = data["duration_us"] / 1e6
    answered = data["requests"] - data["exhausted"]
    errors = {k: v for k, v in data["errors"].items() if v and k != "status"}
    ids_path = Path(str(result) + ".ids")
    ids = ids_path.read_text().split() if ids_path.exists() else []
    note = ""
    if data["exhausted"]:
        note = f"vehicles exhausted ({data['exhausted']} filler requests): shorten --duration"
    if errors:
        note += f" socket errors {errors}"
    # Per server process (the supervisor and each worker): whether the load was spread over
    # the workers, or one of them took most of the connections.
    per_process = sorted((s1[pid] - s0[pid]) / seconds for pid in s0 if pid in s1)
    note += " server per process " + " / ".join(f"{c:.2f}" for c in per_process)
    return Phase(
        name,
        answered / seconds,
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        answered,
        seconds,
        statuses=data["statuses"],
        cpu={
            "wrk": (usage.ru_utime + usage.ru_stime) / seconds,
            "server": cpu_used(s0, s1) / seconds,
            "postgres": cpu_used(pg0, pg1) / seconds,
        },
        note=note.strip(),
    ), ids


# ---------------------------------------------------------------- checks


FRAMEWORK = (
    "fastapi/", "starlette/", "pydantic", "anyio/", "uvicorn/", "asyncio/", "h11/",
    "httptools", "orjson", "json/", "typing", "enum.py", "functools", "contextlib",
)  # fmt: skip


def reads_profile(path: Path | None) -> Path | None:
    """--profile's file for R, beside the one for W."""
    return None if path is None else path.with_name(path.stem + "-reads" + path.suffix)


def profile_summary(path: Path) -> dict[str, float]:
    """The share of the server's sampled stacks by where they were, from py-spy's raw output
    (root first, leaf last, sample count at the end of each line). py-spy runs without
    --idle, so a thread waiting in a system call (for PostgreSQL, for a request) is not
    sampled; a thread waiting for the GIL is, so the shares, not the sample counts, are
    what to read (main multiplies them by the CPU the server was measured to use). Each
    sample goes to the innermost frame of a known kind: the database driver and pool, the
    web framework and event loop, app/."""
    spent: dict[str, float] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        kind = "other (interpreter, prometheus_client, start-up)"
        for frame in reversed(stack.split(";")):
            where = frame.rpartition("(")[2]
            if where.startswith("app/"):
                kind = "own code (app/)"
            elif where.startswith(("sqlalchemy/", "psycopg")):
                kind = "database driver and pool (psycopg, psycopg_pool, SQLAlchemy)"
            elif where.startswith(FRAMEWORK):
                kind = "framework (FastAPI, Starlette, pydantic, uvicorn, asyncio)"
            else:
                continue
            break
        spent[kind] = spent.get(kind, 0.0) + int(count)
    total = sum(spent.values()) or 1.0
    return {k: v / total for k, v in sorted(spent.items())}


def check(
    created_ids: list[str], statuses: dict[str, int], connections: int
) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []
    with psycopg.connect(DB_URL) as conn:

        def one(sql: str, *args: Any) -> Any:
            row = conn.execute(sql, args).fetchone()
            assert row is not None
            return row[0]

        completed = one("SELECT count(*) FROM swap_events WHERE outcome = 'completed'")
        stored = one(
            "SELECT count(*) FROM swap_events WHERE outcome = 'completed' AND id = ANY(%s)",
            [uuid.UUID(i) for i in created_ids],
        )
        n201 = statuses.get("201", 0)
        # wrk stops with up to one request per connection in flight: those may have been
        # stored without wrk seeing their 201.
        results.append(
            (
                "every 201 is a stored swap",
                n201 == len(created_ids) == len(set(created_ids)) == stored
                and 0 <= completed - n201 <= connections,
                f"{n201} responses 201, {len(set(created_ids))} distinct ids, {stored} of them"
                f" stored as completed swaps; {completed} completed swaps in the table (at most"
                f" {connections} were in flight when wrk stopped)",
            )
        )
        replays = one(
            "SELECT count(*) FROM idempotency_records WHERE status_code = 201"
            " AND key LIKE 'rest-%%'"
        )
        results.append(
            (
                "every completed swap stored its Idempotency-Key",
                replays == completed,
                f"{replays} stored 201 responses",
            )
        )
        twice = one(
            "SELECT count(*) FROM (SELECT installed_battery_id FROM swap_events"
            " WHERE outcome = 'completed' GROUP BY 1 HAVING count(*) > 1) t"
        )
        results.append(("no battery handed out twice", twice == 0, f"{twice} handed out twice"))
        places = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE location_kind = 'slot'),"
            " count(*) FILTER (WHERE location_kind = 'vehicle'),"
            " count(DISTINCT slot_id), count(DISTINCT vehicle_id) FROM batteries"
        ).fetchone()
        assert places is not None
        total, in_slots, in_vehicles, slots, vehicles = places
        results.append(
            (
                "every battery in exactly one place",
                (total, in_slots, in_vehicles, slots, vehicles)
                == (2 * VEHICLES, VEHICLES, VEHICLES, VEHICLES, VEHICLES),
                f"{total} batteries: {in_slots} in {slots} slots, {in_vehicles} in"
                f" {vehicles} vehicles",
            )
        )
        # The history: two custody events per completed swap, the installed battery from
        # its slot into the vehicle and the removed one into that slot, and every battery's
        # last event names where it is now.
        bad_events = one(
            "SELECT count(*) FROM swap_events s WHERE s.outcome = 'completed' AND 2 <> ("
            " SELECT count(*) FROM custody_events c WHERE c.swap_id = s.id AND ("
            "  (c.battery_id = s.installed_battery_id AND c.from_slot_id = s.installed_from_slot_id"
            "   AND c.to_vehicle_id = s.vehicle_id) OR"
            "  (c.battery_id = s.removed_battery_id AND c.from_vehicle_id = s.vehicle_id"
            "   AND c.to_slot_id = s.removed_to_slot_id)))"
        )
        stray = one(
            "SELECT count(*) FROM custody_events WHERE cause = 'swap'"
            " AND swap_id NOT IN (SELECT id FROM swap_events WHERE outcome = 'completed')"
        )
        mismatched = one(
            "SELECT count(*) FROM batteries b JOIN LATERAL (SELECT * FROM custody_events c"
            " WHERE c.battery_id = b.id ORDER BY c.at DESC, c.id DESC LIMIT 1) last ON true"
            " WHERE last.to_kind IS DISTINCT FROM b.location_kind"
            " OR last.to_slot_id IS DISTINCT FROM b.slot_id"
            " OR last.to_vehicle_id IS DISTINCT FROM b.vehicle_id"
        )
        results.append(
            (
                "custody history matches the swaps",
                bad_events == stray == mismatched == 0,
                f"{bad_events} swaps without their two custody events, {stray} swap events"
                f" without a swap, {mismatched} batteries whose last event is not where they"
                " are",
            )
        )
    return results


# ---------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def phase_row(p: Phase, base: str = "") -> str:
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in p.cpu.items())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(p.statuses.items()))
    return (
        f"| {p.name} | {p.rate:,.0f}/s | {base} | {p.p50_ms:.1f} | {p.p99_ms:.1f} |"
        f" {p.requests:,} in {p.seconds:.1f} s {('(' + statuses + ')') if statuses else ''}"
        f" | {cpu} |" + (f" {p.note}" if p.note else "")
    )


def render(
    args: argparse.Namespace,
    load_s: float,
    phases: dict[str, Phase],
    checks: list[tuple[str, bool, str]],
    loads: list[str],
) -> str:
    s, s1, h, r, w = phases["S"], phases["S1"], phases["H"], phases["R"], phases["W"]
    lines = [
        f"`{' '.join(['python', 'bench/bench_swaps.py', *sys.argv[1:]])}`,"
        f" {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores,"
        f" server `swapfleet api{' --workers ' + str(args.workers) if args.workers else ''}`"
        f" ({args.workers or len(os.sched_getaffinity(0))} workers),"
        f" wrk {args.connections} connections / {args.wrk_threads} threads, load average"
        f" before each phase: {'; '.join(loads)}. Network loaded in {load_s:.1f} s.",
        "",
        "| phase | rate | ratio | p50 ms | p99 ms | requests | CPU (cores) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        phase_row(s, "baseline S"),
        phase_row(s1, f"{ratio(s1.rate, s.rate)} x S"),
        phase_row(h, "baseline H"),
        phase_row(r, f"{ratio(r.rate, h.rate)} x H"),
        phase_row(w, f"{ratio(w.rate, s.rate)} x S, {ratio(w.rate, s1.rate)} x S1"),
        "",
    ]
    if "S0" in phases:
        s0 = phases["S0"]
        lines.insert(-4, phase_row(s0, f"{ratio(s0.rate, s.rate)} x S"))
    targets = [
        ("swaps >= 300/s", w.rate >= 300, f"{w.rate:,.0f}/s"),
        ("swaps >= 0.6 x S", w.rate >= 0.6 * s.rate, f"{ratio(w.rate, s.rate)} x"),
        ("swap p99 <= 150 ms", w.p99_ms <= 150, f"{w.p99_ms:.0f} ms"),
        ("reads >= 0.6 x H", r.rate >= 0.6 * h.rate, f"{ratio(r.rate, h.rate)} x"),
        ("read p99 < 50 ms", r.p99_ms < 50, f"{r.p99_ms:.0f} ms"),
    ]
    lines += ["| target | measured | |", "| --- | --- | --- |"]
    lines += [f"| {t} | {m} | {'met' if ok else 'NOT met'} |" for t, ok, m in targets]
    lines += ["", "| check of W | | |", "| --- | --- | --- |"]
    lines += [f"| {c} | {'passed' if ok else 'FAILED'} | {d} |" for c, ok, d in checks]
    return "\n".join(lines)


def write_docs(block: str) -> None:
    text = DOCS.read_text()
    new = f"{DOCS_BEGIN}\n{block}\n{DOCS_END}"
    if DOCS_BEGIN in text:
        text = re.sub(
            re.escape(DOCS_BEGIN) + ".*?" + re.escape(DOCS_END), lambda _: new, text, flags=re.S
        )
    else:
        text = text.rstrip("\n") + "\n\n## Swaps\n\n" + new + "\n"
    DOCS.write_text(text)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--workers", type=int, default=None, help="passed to swapfleet api")
    parser.add_argument("--keep-server", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--sql-without-swap-triggers",
        action="store_true",
        help="also run S with the user triggers on swap_events disabled",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the server during W into this file, and during R into FILE-reads",
    )
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        out("wrk is missing: apt-get install -y wrk")
        return 2

    out(f"load average {load_average()}; recreating {DB_NAME} and migrating")
    recreate_database()
    keys, load_s = load_network()
    out(f"network loaded in {load_s:.1f} s: {STATIONS} stations x {SLOTS} slots,"
        f" {VEHICLES} vehicles, {2 * VEHICLES} batteries")  # fmt: skip
    phases: dict[str, Phase] = {}
    loads: list[str] = []

    loads.append(f"S {load_average()}")
    phases["S"] = run_sql(keys, args.connections, args.duration)
    out(phase_row(phases["S"]))
    if args.sql_without_swap_triggers:
        keys, _ = load_network()
        with psycopg.connect(DB_URL, autocommit=True) as conn:
            conn.execute("ALTER TABLE swap_events DISABLE TRIGGER USER")
        s0 = run_sql(keys, args.connections, args.duration)
        s0.name = "S0 plain SQL swap, swap_events triggers off"
        phases["S0"] = s0
        out(phase_row(s0))
        with psycopg.connect(DB_URL, autocommit=True) as conn:
            conn.execute("ALTER TABLE swap_events ENABLE TRIGGER USER")
    keys, _ = load_network()
    loads.append(f"S1 {load_average()}")
    phases["S1"] = run_sql(keys, args.connections, args.duration, function=True)
    out(phase_row(phases["S1"]))
    keys, load_s = load_network()

    server = Server(free_port(), args.workers)
    workdir = Path(tempfile.mkdtemp(prefix="bench_swaps_"))
    try:
        common = {
            "connections": args.connections,
            "threads": args.wrk_threads,
            "duration": args.duration,
            "workdir": workdir,
        }
        # Warm-up: every worker's engine, pool and prepared statements, not timed.
        run_wrk("warmup", server, LUA_READ, {"KEY": keys.admin, "N": VEHICLES},
                **{**common, "duration": 2})  # fmt: skip
        loads.append(f"H {load_average()}")
        phases["H"], _ = run_wrk("H GET /healthz", server, LUA_HEALTHZ, {}, **common)
        out(phase_row(phases["H"]))
        loads.append(f"R {load_average()}")
        phases["R"], _ = run_wrk(
            "R GET /v1/batteries/{serial}",
            server,
            LUA_READ,
            {"KEY": keys.admin, "N": VEHICLES},
            **common,
            profile=reads_profile(args.profile),
        )
        out(phase_row(phases["R"]))
        loads.append(f"W {load_average()}")
        phases["W"], ids = run_wrk(
            "W POST /v1/swaps",
            server,
            LUA_SWAP,
            {"KEY": keys.operator, "N": VEHICLES, "STATIONS": STATIONS, "TAG": "rest"},
            **common,
            profile=args.profile,
        )
        out(phase_row(phases["W"]))
        if args.keep_server:
            time.sleep(args.keep_server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    checks = check(ids, phases["W"].statuses, args.connections)
    if args.profile is not None:
        for what, phase, path in (
            ("swap", phases["W"], args.profile),
            ("read", phases["R"], reads_profile(args.profile)),
        ):
            cpu_ms = 1000 * phase.cpu["server"] / phase.rate
            out(f"server CPU per {what} {cpu_ms:.2f} ms (measured), by py-spy's share of samples:")
            for kind, share in profile_summary(path).items():
                out(f"  {kind}: {share * cpu_ms:.2f} ms ({share:.0%})")
    for name, ok, detail in checks:
        out(f"check: {name}: {'passed' if ok else 'FAILED'} ({detail})")
    block = render(args, load_s, phases, checks, loads)
    out()
    out(block)
    if not args.no_docs:
        write_docs(block)
        out(f"\nwritten into {DOCS.relative_to(ROOT)}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
