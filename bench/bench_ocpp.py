"""The OCPP 2.1 gateway under a fleet of stations, next to a bare WebSocket echo server on the
same framework (FastAPI/Starlette on uvicorn), in the same run (issue 16).

    python bench/bench_ocpp.py                      # 1,000 stations, 120 s per phase
    python bench/bench_ocpp.py --stations 300 --duration 60 --swaps-per-s 15
    python bench/bench_ocpp.py --no-docs            # print only, leave docs/benchmarks.md

Against a dedicated database (recreated, migrated with app.core.migrate.upgrade), loaded by
set-based SQL: N stations of 10 slots (8 charged batteries in slots 1-8, slots 9-10 empty),
8 vehicles per station with a depleted battery each, an idToken per vehicle, an OCPP
password per station.

Each phase connects the N stations at once (one WebSocket each, HTTP Basic, subprotocol
ocpp2.1), then for --duration seconds every station sends a Heartbeat every 30 s and a
MeterValues for each of its 8 occupied slots every 60 s (spread over the period, random
phase), and the swap driver runs --swaps-per-s swaps across the stations: BatteryIn of a
vehicle's battery into an empty slot, then BatteryOut of a charged one (each station one
CALL at a time, as OCPP-J wants). Latency: BatteryOut sent -> its CALLRESULT received; the
gateway answers only after the swap is committed, so it is BatteryOut -> stored swap.

  G: `swapfleet api --workers W` (the gateway is its /ocpp route; W defaults to one per CPU,
     as `swapfleet api` does), SWAPFLEET_ENVIRONMENT development (profile 1: production
     refuses plain ws://; TLS would be a proxy's);
  E: a FastAPI app on uvicorn, one process, whose /ocpp/{code} route accepts the same
     handshake (subprotocol) and answers every CALL with an empty CALLRESULT, without
     parsing beyond the message id: the cost of the framework and the connections alone.

Reported per phase: connect time, server CPU (% of one core, user+system of the server
processes; for G also PostgreSQL's backends of its database), RSS before and after
connecting (memory per connection = the difference / N), messages answered, CALLERRORs,
swap latency p50/p99, and for G the swaps stored (checked in SQL). The load generator runs
on the same machine and takes CPU too: its own share is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg
import websockets
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.migrate import upgrade  # noqa: E402
from app.provisioning.mosquitto_files import hash_password  # noqa: E402
from devices.ocpp import VENDOR_ID  # noqa: E402

DB_NAME = "swapfleet_bench_ocpp"
ADMIN_URL = os.environ.get(
    "SWAPFLEET_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
SLOTS = 10
CHARGED = 8
PASSWORD = "bench-station-password-0123456789"
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_BEGIN = "<!-- bench_ocpp: latest run, written by bench/bench_ocpp.py -->"
DOCS_END = "<!-- bench_ocpp: end -->"
HEARTBEAT_S = 30.0
METER_S = 60.0
DRAIN_S = 30.0


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def station_code(s: int) -> str:
    return f"OST{s:04d}"


def vin(s: int, k: int) -> str:
    # VINs have no I, O or Q: an "O" prefix would make every swap's VIN invalid.
    return f"SV{s * CHARGED + k:015d}"


def load(stations: int) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (DB_NAME,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    upgrade(DB_URL)
    vehicles = stations * CHARGED
    statements = [
        "INSERT INTO organizations (code, name, role) VALUES ('OOP', 'Bench operator',"
        " 'operator'), ('OOEM', 'Bench OEM', 'oem'), ('OOWN', 'Bench owner', 'owner')",
        "INSERT INTO pack_types (code, name, chemistry, nominal_energy_kwh, nominal_capacity_ah,"
        " nominal_voltage_v) VALUES ('OPT', 'Bench pack', 'LFP', 141, 280, 512)",
        "INSERT INTO vehicle_models (oem_id, code, name)"
        " SELECT id, 'OOEM-M', 'Bench model' FROM organizations WHERE role = 'oem'",
        "INSERT INTO vehicle_model_pack_types (vehicle_model_id, pack_type_id)"
        " SELECT vm.id, pt.id FROM vehicle_models vm, pack_types pt",
        f"INSERT INTO stations (operator_id, code, name, latitude, longitude, timezone, status,"
        f" target_soc_pct) SELECT op.id, 'OST' || lpad(g::text, 4, '0'), 'Bench station',"
        f" 31.2, 121.4, 'Asia/Shanghai', 'active', 90"
        f" FROM generate_series(0, {stations - 1}) g, organizations op WHERE op.code = 'OOP'",
        f"INSERT INTO slots (station_id, number, enabled)"
        f" SELECT s.id, n, true FROM stations s, generate_series(1, {SLOTS}) n",
        f"INSERT INTO vehicles (vin, oem_id, model_id)"
        f" SELECT 'SV' || lpad(g::text, 15, '0'), vm.oem_id, vm.id"
        f" FROM generate_series(0, {vehicles - 1}) g, vehicle_models vm",
        # Battery i charged in slot (i % 8) + 1 of station i / 8.
        f"INSERT INTO batteries (serial, pack_type_id, owner_id, oem_id, state, location_kind,"
        f" slot_id, soc_pct, soh_pct, equivalent_full_cycles)"
        f" SELECT 'OSB' || lpad(g::text, 6, '0'), pt.id, own.id, oem.id, 'in_service', 'slot',"
        f" sl.id, 95 + g % 5, 90 + g % 10, g % 300"
        f" FROM generate_series(0, {vehicles - 1}) g"
        f" JOIN stations st ON st.code = 'OST' || lpad((g / {CHARGED})::text, 4, '0')"
        f" JOIN slots sl ON sl.station_id = st.id AND sl.number = g % {CHARGED} + 1,"
        f" pack_types pt, organizations own, organizations oem"
        f" WHERE own.code = 'OOWN' AND oem.code = 'OOEM'",
        "INSERT INTO batteries (serial, pack_type_id, owner_id, oem_id, state, location_kind,"
        " vehicle_id, soc_pct, soh_pct, equivalent_full_cycles)"
        " SELECT 'OVB' || substr(v.vin, 12), pt.id, own.id, v.oem_id, 'in_service', 'vehicle',"
        " v.id, 15, 92, 100"
        " FROM vehicles v, pack_types pt, organizations own WHERE own.code = 'OOWN'",
        "INSERT INTO custody_events (battery_id, at, cause, from_kind, to_kind, to_slot_id,"
        " to_vehicle_id, state_from, state_to)"
        " SELECT id, now() - interval '1 day', 'registered', NULL, location_kind, slot_id,"
        " vehicle_id, NULL, state FROM batteries",
        "INSERT INTO id_tokens (id_token, vehicle_id) SELECT lower(vin), id FROM vehicles",
    ]
    with psycopg.connect(DB_URL) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO ocpp_credentials (station_id, password_hash) SELECT id, %s FROM stations",
            (hash_password(PASSWORD),),
        )
        conn.commit()
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# ---------------------------------------------------------------- servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, argv: list[str], port: int, env: dict[str, str]) -> None:
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
                raise RuntimeError(f"{argv} exited with {self.proc.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{argv} did not answer /healthz within 60 s")

    def processes(self) -> list[psutil.Process]:
        # With one worker uvicorn serves in the process it was started as; with more, in
        # children of it (the supervisor itself idles).
        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def gateway_server(workers: int) -> Server:
    port = free_port()
    env = dict(os.environ)
    env.update(
        SWAPFLEET_DATABASE_URL=DB_URL,
        SWAPFLEET_ENVIRONMENT="development",
        SWAPFLEET_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    argv = [sys.executable, "-m", "app.cli", "api", "--port", str(port), "--workers", str(workers)]
    return Server(argv, port, env)


def echo_server() -> Server:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return Server([sys.executable, __file__, "echo-server", str(port)], port, env)


def run_echo_server(port: int) -> None:
    import uvicorn

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ocpp/{code}")
    async def echo(websocket: WebSocket, code: str) -> None:
        await websocket.accept(subprotocol="ocpp2.1")
        try:
            while True:
                text = await websocket.receive_text()
                # The message id only: [2, "id", ...] -> [3, "id", {}].
                message_id = text.split(",", 2)[1]
                await websocket.send_text(f"[3,{message_id},{{}}]")
        except WebSocketDisconnect:
            return

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- the stations


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Counters:
    answered: int = 0
    callerrors: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    swap_latency: list[float] = field(default_factory=list)
    swaps_done: int = 0
    swaps_started: int = 0
    swaps_skipped: int = 0


class Station:
    def __init__(self, index: int, connection: Any, counters: Counters) -> None:
        self.index = index
        self.code = station_code(index)
        self.connection = connection
        self.counters = counters
        self.lock = asyncio.Lock()
        self.next_id = 0
        # Slot -> battery serial as the station sees it; None for an empty slot.
        self.slots: dict[int, str | None] = {
            n: f"OSB{index * CHARGED + n - 1:06d}" if n <= CHARGED else None
            for n in range(1, SLOTS + 1)
        }
        self.charged = list(range(1, CHARGED + 1))  # slots with a battery not yet handed out
        self.reserved: set[int] = set()  # empty slots a swap under way puts a battery in
        self.vehicles = list(range(CHARGED))
        self.request_id = 0

    async def call(self, action: str, payload: dict[str, Any]) -> tuple[list[Any], float]:
        async with self.lock:  # OCPP-J: one CALL at a time
            self.next_id += 1
            frame = orjson.dumps([2, str(self.next_id), action, payload])
            started = time.perf_counter()
            try:
                await self.connection.send(frame.decode())
                answer = orjson.loads(await self.connection.recv())
            except websockets.ConnectionClosed as exc:
                # The server closed it (overload: a missed ping; a crash): counted.
                answer = [4, str(self.next_id), f"closed {exc.rcvd.code if exc.rcvd else '-'}"]
            elapsed = time.perf_counter() - started
        if answer[0] == 3:
            self.counters.answered += 1
        else:
            self.counters.callerrors += 1
            code = f"{action}:{answer[2]}"
            self.counters.errors[code] = self.counters.errors.get(code, 0) + 1
        return answer, elapsed

    async def heartbeats(self, until: float) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT_S))
        while time.monotonic() < until:
            await self.call("Heartbeat", {})
            await asyncio.sleep(HEARTBEAT_S)

    async def meter_values(self, until: float) -> None:
        # 8 occupied slots every 60 s, spread over the period.
        await asyncio.sleep(random.uniform(0, METER_S / CHARGED))
        while time.monotonic() < until:
            for slot in [n for n, serial in self.slots.items() if serial is not None][:CHARGED]:
                if time.monotonic() >= until:
                    return
                await self.call("MeterValues", meter_values_payload(slot))
                await asyncio.sleep(METER_S / CHARGED)

    def can_swap(self) -> bool:
        free = any(serial is None and n not in self.reserved for n, serial in self.slots.items())
        return bool(self.charged and self.vehicles and free)

    async def swap(self) -> bool:
        # A station's swaps may overlap when the gateway is slow: each takes its own empty
        # slot (two in one slot would be a SlotOccupied custody exception, the load
        # generator's fault).
        if not self.can_swap():
            return False
        free = [n for n, serial in self.slots.items() if serial is None and n not in self.reserved]
        k = self.vehicles.pop()
        take = self.charged.pop(0)
        empty = free[0]
        self.reserved.add(empty)
        self.request_id += 1
        token = {"idToken": vin(self.index, k).lower(), "type": "Central"}
        depleted = f"OVB{self.index * CHARGED + k:06d}"
        battery_in = {
            "eventType": "BatteryIn",
            "requestId": self.request_id,
            "idToken": token,
            "batteryData": [{"evseId": empty, "serialNumber": depleted, "soC": 15, "soH": 92}],
        }
        await self.call("BatterySwap", battery_in)
        charged = self.slots[take]
        assert charged is not None
        # The station's meter goes on with the slots it still holds a battery in; custody
        # moves at BatteryOut.
        self.slots[take] = None
        battery_out = {
            "eventType": "BatteryOut",
            "requestId": self.request_id,
            "idToken": token,
            "batteryData": [{"evseId": take, "serialNumber": charged, "soC": 96, "soH": 95}],
        }
        answer, elapsed = await self.call("BatterySwap", battery_out)
        self.slots[empty] = depleted
        self.reserved.discard(empty)
        if answer[0] == 3:
            self.counters.swap_latency.append(elapsed)
            self.counters.swaps_done += 1
        return True


def meter_values_payload(slot: int) -> dict[str, Any]:
    now = iso_now()
    return {
        "evseId": slot,
        "meterValue": [
            {
                "timestamp": now,
                "sampledValue": [
                    {"value": 96.0, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}},
                    {"value": 402.5, "measurand": "Voltage"},
                    {"value": 30.0, "measurand": "Current.Import"},
                    {"value": 12100, "measurand": "Power.Active.Import"},
                    {"value": 8400, "measurand": "Energy.Active.Import.Register"},
                ],
                "customData": {"vendorId": VENDOR_ID, "tempCMin": 24.0, "tempCMax": 31.5},
            }
        ],
    }


def basic_auth(code: str) -> dict[str, str]:
    token = base64.b64encode(f"{code}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Phase:
    name: str
    stations: int
    connected: int = 0
    connect_s: float = 0.0
    rss_idle_mb: float = 0.0
    rss_connected_mb: float = 0.0
    server_cpu_pct: float = 0.0
    db_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    duration_s: float = 0.0
    counters: Counters = field(default_factory=Counters)
    stored_swaps: int | None = None
    stored_samples: int | None = None
    unfinished_tasks: int = 0

    def percentile(self, q: float) -> float:
        values = sorted(self.counters.swap_latency)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))] * 1000


def db_backends() -> list[psutil.Process]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (DB_NAME,),
        ).fetchall()
    found = []
    for (pid,) in rows:
        try:
            found.append(psutil.Process(int(pid)))
        except psutil.NoSuchProcess:
            pass
    return found


def rss_mb(processes: list[psutil.Process]) -> float:
    return sum(p.memory_info().rss for p in processes) / 2**20


def cpu_of(processes: list[psutil.Process]) -> dict[int, float]:
    times = {}
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        times[p.pid] = t.user + t.system
    return times


async def run_phase(
    name: str, server: Server, stations: int, duration: float, swaps_per_s: float, db: bool
) -> Phase:
    phase = Phase(name, stations)
    server_procs = server.processes()
    phase.rss_idle_mb = rss_mb(server_procs)
    ws = server.url.replace("http://", "ws://")
    counters = phase.counters
    connected: list[Station] = []
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(50)

    async def connect(i: int) -> None:
        async with semaphore:
            try:
                connection = await websockets.connect(
                    f"{ws}/ocpp/{station_code(i)}",
                    subprotocols=["ocpp2.1"],  # type: ignore[list-item]
                    additional_headers=basic_auth(station_code(i)),
                    open_timeout=60,
                    ping_interval=None,
                )
            except Exception as exc:  # the machine's limit: reported as connected < N
                key = f"connect:{type(exc).__name__}"
                counters.errors[key] = counters.errors.get(key, 0) + 1
                return
            connected.append(Station(i, connection, counters))

    await asyncio.gather(*(connect(i) for i in range(stations)))
    phase.connect_s = time.perf_counter() - started
    phase.connected = len(connected)
    for station in connected:
        await station.call(
            "BootNotification",
            {"reason": "PowerUp", "chargingStation": {"model": "Bench", "vendorName": "bench"}},
        )
    phase.rss_connected_mb = rss_mb(server_procs)
    out(
        f"{name}: {phase.connected}/{stations} connected in {phase.connect_s:.1f} s; "
        f"RSS {phase.rss_idle_mb:.0f} -> {phase.rss_connected_mb:.0f} MiB"
    )
    counters.answered = counters.callerrors = 0
    counters.errors = {k: v for k, v in counters.errors.items() if k.startswith("connect")}

    backends = db_backends() if db else []
    me = psutil.Process()
    cpu_before = cpu_of(server_procs), cpu_of(backends), cpu_of([me])
    t0 = time.monotonic()
    until = t0 + duration
    tasks = [asyncio.create_task(s.heartbeats(until)) for s in connected]
    tasks += [asyncio.create_task(s.meter_values(until)) for s in connected]

    async def swaps() -> None:
        order = list(connected)
        random.shuffle(order)
        pending: set[asyncio.Task[bool]] = set()
        n = 0
        while time.monotonic() < until:
            # Open loop: swap n starts at t0 + n / rate, whether or not earlier ones ended.
            delay = t0 + n / swaps_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            station = order[n % len(order)]
            n += 1
            if not station.can_swap():
                counters.swaps_skipped += 1
                continue
            counters.swaps_started += 1
            task = asyncio.create_task(station.swap())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)

    if connected:
        tasks.append(asyncio.create_task(swaps()))
        # An overloaded server leaves calls queued behind each station's lock: they get
        # DRAIN_S to finish after the period, then are cancelled (and counted as unanswered).
        done, unfinished = await asyncio.wait(tasks, timeout=duration + DRAIN_S)
        for task in unfinished:
            task.cancel()
        phase.unfinished_tasks = len(unfinished)
    phase.duration_s = time.monotonic() - t0
    # Backends opened during the period count from zero.
    cpu_after = cpu_of(server_procs), cpu_of(db_backends() if db else []), cpu_of([me])
    for pid in cpu_after[1]:
        cpu_before[1].setdefault(pid, 0.0)

    def pct(before: dict[int, float], after: dict[int, float]) -> float:
        used = sum(after[p] - before[p] for p in before if p in after)
        return 100 * used / phase.duration_s

    phase.server_cpu_pct = pct(cpu_before[0], cpu_after[0])
    phase.db_cpu_pct = pct(cpu_before[1], cpu_after[1])
    phase.client_cpu_pct = pct(cpu_before[2], cpu_after[2])
    for station in connected:
        try:
            await asyncio.wait_for(station.connection.close(), timeout=5)
        except Exception:  # a connection left mid-call by a cancelled task
            pass
    return phase


def stored() -> tuple[int, int]:
    with psycopg.connect(DB_URL) as conn:
        swaps = conn.execute(
            "SELECT count(*) FROM swap_events WHERE outcome = 'completed'"
        ).fetchone()
        samples = conn.execute("SELECT count(*) FROM charging_samples").fetchone()
    assert swaps is not None
    assert samples is not None
    return int(swaps[0]), int(samples[0])


def per_s(count: int, phase: Phase) -> float:
    return count / phase.duration_s if phase.duration_s else 0.0


def report(phases: list[Phase], args: argparse.Namespace, load_avg: str) -> str:
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python bench/bench_ocpp.py --stations "
        f"{args.stations} --duration {args.duration:g} --swaps-per-s {args.swaps_per_s:g} "
        f"--workers {args.workers}`, "
        f"{os.cpu_count()} CPUs, load average before: {load_avg}.",
        "",
        f"| | G: gateway (`swapfleet api --workers {args.workers}`) | E: bare echo (FastAPI,"
        " same route, one process) |",
        "|---|---|---|",
    ]
    g, e = phases

    def row(label: str, fn: Any) -> None:
        lines.append(f"| {label} | {fn(g)} | {fn(e)} |")

    row("stations connected", lambda p: f"{p.connected:,} / {p.stations:,}")
    row("time to connect them all", lambda p: f"{p.connect_s:.1f} s")
    row(
        "server RSS before / after connecting",
        lambda p: f"{p.rss_idle_mb:.0f} / {p.rss_connected_mb:.0f} MiB",
    )
    row(
        "memory per connection",
        lambda p: f"{(p.rss_connected_mb - p.rss_idle_mb) * 1024 / max(1, p.connected):.0f} KiB",
    )
    row("measured for", lambda p: f"{p.duration_s:.0f} s")
    row(
        "messages answered (CALLRESULT) / CALLERROR",
        lambda p: (
            f"{p.counters.answered:,} ({per_s(p.counters.answered, p):.0f}/s)"
            f" / {p.counters.callerrors:,}"
        ),
    )
    row("server CPU (% of one core)", lambda p: f"{p.server_cpu_pct:.0f} %")
    row("PostgreSQL backends' CPU", lambda p: f"{p.db_cpu_pct:.0f} %" if p is g else "-")
    row("load generator's CPU", lambda p: f"{p.client_cpu_pct:.0f} %")
    row(
        "swaps started / skipped (station out of charged batteries or free slots)",
        lambda p: f"{p.counters.swaps_started:,} / {p.counters.swaps_skipped:,}",
    )
    row(
        "tasks still waiting for an answer 30 s after the period (cancelled)",
        lambda p: f"{p.unfinished_tasks:,}",
    )
    row(
        "swaps (BatteryIn + BatteryOut) answered",
        lambda p: f"{p.counters.swaps_done:,} ({per_s(p.counters.swaps_done, p):.1f}/s)",
    )
    row(
        "BatteryOut -> stored swap (answer), p50 / p99",
        lambda p: f"{p.percentile(0.5):.0f} / {p.percentile(0.99):.0f} ms",
    )
    row(
        "swaps stored (SQL)", lambda p: f"{p.stored_swaps:,}" if p.stored_swaps is not None else "-"
    )
    row(
        "charging samples stored (SQL)",
        lambda p: f"{p.stored_samples:,}" if p.stored_samples is not None else "-",
    )
    errors = {**g.counters.errors}
    if errors:
        lines += ["", f"G's errors: `{errors}`"]
    if e.counters.errors:
        lines += ["", f"E's errors: `{e.counters.errors}`"]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    current = DOCS.read_text()
    block = f"{DOCS_BEGIN}\n{text}\n{DOCS_END}"
    if DOCS_BEGIN in current:
        before, rest = current.split(DOCS_BEGIN, 1)
        after = rest.split(DOCS_END, 1)[1]
        DOCS.write_text(before + block + after)
    else:
        DOCS.write_text(current.rstrip() + "\n\n## OCPP gateway\n\n" + block + "\n")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "echo-server":
        run_echo_server(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--swaps-per-s", type=float, default=50.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="API processes (default: one per CPU, as `swapfleet api`)",
    )
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument(
        "--gateway-only", action="store_true", help="skip the echo phase (profiling; no docs)"
    )
    args = parser.parse_args()
    # One socket per station in this process and in the server's (which inherits this).
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    load(args.stations)
    out(f"loaded {args.stations} stations in {time.perf_counter() - started:.1f} s")
    phases = []
    server = gateway_server(args.workers)
    try:
        phase = asyncio.run(
            run_phase("G", server, args.stations, args.duration, args.swaps_per_s, db=True)
        )
    finally:
        server.stop()
    phase.stored_swaps, phase.stored_samples = stored()
    phases.append(phase)
    if args.gateway_only:
        phases.append(Phase("E", 0))
        out(report(phases, args, load_avg))
        return
    server = echo_server()
    try:
        phases.append(
            asyncio.run(
                run_phase("E", server, args.stations, args.duration, args.swaps_per_s, db=False)
            )
        )
    finally:
        server.stop()
    text = report(phases, args, load_avg)
    out(text)
    if not args.no_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
