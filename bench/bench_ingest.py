"""How fast the MQTT ingest drains a QoS 1 backlog into PostgreSQL, next to raw baselines.

    python bench/bench_ingest.py               # issue 3: (a) then (b)
    python bench/bench_ingest.py --scenario a  # (a) 200,000 messages of 1 record
    python bench/bench_ingest.py --scenario b  # (b) 10,000 messages of 100 records
    python bench/bench_ingest.py --scenario custom --messages 20000 --records-per-message 10

Everything runs in one process, on the same data, against a fresh database (recreated and
migrated with Alembic) and a private Mosquitto on a free port whose queues are unbounded, so
the backlog is never silently truncated. Per scenario (K records per message, N messages):

  A1  raw binary COPY of the same rows straight into charging_samples (rows/s)
  A2  raw binary COPY into a staging table + INSERT ... ON CONFLICT DO NOTHING (rows/s):
      the SQL the ingest runs, without its Python around it
  B1  a bare paho subscriber draining the QoS 1 backlog, orjson decode only (messages/s)
  B2  the same subscriber running the ingest's decode + contract validation, no database
  I   IngestService with the product's default settings draining the backlog from its
      persistent session: start to last commit, then rows counted (all stored, none doubled);
      its CPU is the MQTT process's plus its writer process's
  R   the same messages republished and drained again: the dedup pass (rows unchanged)

Publishing the backlog is not timed: the subscribers are offline while it is queued.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.config import Settings, normalize_database_url  # noqa: E402
from app.core.migrate import upgrade  # noqa: E402
from app.ingest.client import IngestService  # noqa: E402
from app.ingest.partitions import create_partitions, month_start  # noqa: E402
from app.ingest.payloads import decode_message  # noqa: E402
from app.ingest.tables import SPECS  # noqa: E402
from app.ingest.writer import WriteResult  # noqa: E402
from app.local.local_broker import MosquittoConfig, free_port  # noqa: E402
from devices.contract import RecordKind, station_topic, subscription_filters  # noqa: E402
from tests.fixtures.ingest_harness import Publisher, seed_fleet, wait_for  # noqa: E402
from tests.fixtures.private_mosquitto import MOSQUITTO  # noqa: E402

ADMIN_URL = os.environ.get(
    "SWAPFLEET_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "bench/v1"
CHARGING = SPECS[RecordKind.charging]
DRAIN_TIMEOUT_S = 900.0

log = logging.getLogger("bench_ingest")


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---- infrastructure -------------------------------------------------------------------------


def recreate_database(name: str) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    return url


class BenchBroker:
    """Mosquitto with unbounded queues and no persistence: a backlog of hundreds of thousands of
    messages stays whole, and no autosave of it competes with the measurement."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sf-bench-mosq-"))
        self.port = free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            MosquittoConfig(
                self.port, persistence_dir=None, max_queued_messages=0, max_inflight_messages=0
            ).render()
        )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)],
            stdout=open(self.dir / "log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        if not wait_for(lambda: _port_open(self.port), timeout=10):
            raise RuntimeError("mosquitto did not start")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def connect_properties(settings: Settings, expiry_s: int | None = None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = (
        settings.ingest_session_expiry_s if expiry_s is None else expiry_s
    )
    properties.ReceiveMaximum = settings.ingest_receive_maximum
    return properties


def create_session(
    port: int, client_id: str, settings: Settings, share_group: str | None = None
) -> None:
    """A persistent QoS 1 subscription that queues the backlog while its owner is offline
    (in a share group: its share of the backlog)."""
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", port, clean_start=True, properties=connect_properties(settings))
    client.loop_start()
    filters = subscription_filters(settings.mqtt_topic_prefix)
    if share_group:
        filters = [f"$share/{share_group}/{f}" for f in filters]
    client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
    if not subscribed.wait(10):
        raise RuntimeError(f"{client_id} did not subscribe")
    client.disconnect()
    client.loop_stop()


def drop_session(port: int, client_id: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0
    client.connect("127.0.0.1", port, clean_start=True, properties=properties)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


def publish_backlog(publisher: Publisher, messages: list[tuple[str, bytes]]) -> None:
    # paho refuses a publish whose 16-bit message id is still in flight: confirm in chunks.
    for i in range(0, len(messages), 20_000):
        publisher.publish_many(messages[i : i + 20_000])


# ---- data ------------------------------------------------------------------------------------


@dataclass
class Dataset:
    messages: list[tuple[str, bytes]]
    rows: list[list[Any]]
    records: int
    payload_bytes: int


@dataclass(frozen=True)
class SeededStation:
    code: str
    id: int
    # The battery in slot n is serials[n - 1].
    serials: list[str]


def build_dataset(stations: list[SeededStation], n_messages: int, per_message: int) -> Dataset:
    """Messages go round-robin over the stations; each carries the next `per_message` samples of
    that station, one per battery and slot in turn, a second apart per battery, as a station
    batching its readings would publish them."""
    per_station_msgs = -(-n_messages // len(stations))
    ticks = -(-per_station_msgs * per_message // min(len(s.serials) for s in stations)) + 1
    # Old enough that the newest sample is still in the past, well inside retention.
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=ticks + 3600)
    received_at = datetime.now(UTC)
    cursor = {s.code: 0 for s in stations}
    messages: list[tuple[str, bytes]] = []
    rows: list[list[Any]] = []
    size = 0
    for m in range(n_messages):
        station = stations[m % len(stations)]
        batteries = len(station.serials)
        records = []
        for _ in range(per_message):
            j = cursor[station.code]
            cursor[station.code] += 1
            slot, tick = j % batteries + 1, j // batteries
            ts = base + timedelta(seconds=tick)
            soc = round(10.0 + (tick % 900) / 10, 1)
            energy = round((tick % 900) * 0.03, 3)
            record = {
                "battery_serial": station.serials[slot - 1],
                "slot": slot,
                "ts": ts.isoformat(),
                "soc_pct": soc,
                "voltage_v": round(480.0 + soc * 0.8, 2),
                "current_a": 150.0,
                "power_kw": round(72.0 + soc * 0.06, 2),
                "temp_c_min": 24.5,
                "temp_c_max": round(30.0 + soc * 0.05, 1),
                "energy_kwh": energy,
            }
            records.append(record)
            rows.append(
                [record["battery_serial"], ts, station.id, slot, soc, record["voltage_v"],
                 150.0, record["power_kw"], 24.5, record["temp_c_max"], energy, None,
                 received_at]
            )  # fmt: skip
        payload = orjson.dumps(records[0] if per_message == 1 else {"records": records})
        size += len(payload)
        messages.append((station_topic(station.code, RecordKind.charging, PREFIX), payload))
    return Dataset(messages, rows, len(rows), size)


def seed(database_url: str, n_stations: int, batteries: int) -> list[SeededStation]:
    engine = create_engine(normalize_database_url(database_url))
    stations = []
    try:
        for _ in range(n_stations):
            fleet = seed_fleet(engine, batteries=batteries)
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT id FROM stations WHERE code = %s", (fleet.station_code,)
                ).fetchone()
            assert row is not None
            stations.append(SeededStation(fleet.station_code, int(row[0]), fleet.serials))
    finally:
        engine.dispose()
    return stations


def reset_telemetry(database_url: str) -> None:
    """Every timed phase starts from the same state: no telemetry or derived state, and no
    dirty pages of the phase before (a checkpoint), whose writing would otherwise fall on
    this phase's clock. Checkpoints this phase's own writes cause stay on it."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "TRUNCATE charging_samples, charging_sessions, dead_letters, battery_daily,"
            " battery_monthly"
        )
        conn.execute("UPDATE batteries SET soc_pct = NULL, readings_at = NULL")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE charging_samples")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            out("note: no CHECKPOINT (needs superuser or pg_checkpoint); phases may overlap")


# ---- baselines -------------------------------------------------------------------------------


def baseline_copy(database_url: str, rows: list[list[Any]], batch: int, staged: bool) -> float:
    """rows/s; one transaction per `batch` rows, as the ingest commits at most that many."""
    columns = ", ".join(CHARGING.columns)
    target = "bench_stage" if staged else CHARGING.table
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "CREATE TEMP TABLE bench_stage (LIKE charging_samples INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )
        conn.commit()
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            with conn.cursor() as cur:
                with cur.copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(list(CHARGING.types))
                    for row in rows[i : i + batch]:
                        copy.write_row(row)
                if staged:
                    cur.execute(
                        f"INSERT INTO {CHARGING.table} ({columns}) SELECT {columns}"
                        " FROM bench_stage ON CONFLICT DO NOTHING"
                    )
            conn.commit()
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def drain_bare(
    port: int,
    client_id: str,
    settings: Settings,
    expected: int,
    handle: Callable[[mqtt.MQTTMessage], None],
) -> float:
    """Seconds from connect to the last of `expected` messages handled; paho acks each message
    when the callback returns, so the backlog really drains."""
    done = threading.Event()
    state = {"count": 0, "end": 0.0}

    def on_connect(client: mqtt.Client, *args: Any) -> None:
        client.subscribe(
            [(f, SubscribeOptions(qos=1)) for f in subscription_filters(settings.mqtt_topic_prefix)]
        )

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        handle(msg)
        state["count"] += 1
        if state["count"] == expected:
            state["end"] = time.perf_counter()
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.on_message = on_message
    started = time.perf_counter()
    client.connect("127.0.0.1", port, clean_start=False, properties=connect_properties(settings))
    client.loop_start()
    finished = done.wait(DRAIN_TIMEOUT_S)
    client.disconnect()
    client.loop_stop()
    if not finished:
        raise RuntimeError(f"{client_id}: {state['count']} of {expected} messages arrived")
    return float(state["end"]) - started


# ---- the ingest ------------------------------------------------------------------------------


@dataclass
class Progress:
    """What the ingests of one run (one, or several in a share group) have committed."""

    target: int
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    write_seconds: float = 0.0
    last_commit: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MeasuredIngest(IngestService):
    """The product's IngestService; only observes each committed batch (called after the
    commit, before the acknowledgements) to time the last commit."""

    def __init__(
        self, settings: Settings, progress: Progress, share_group: str | None = None
    ) -> None:
        super().__init__(settings, share_group=share_group)
        self.progress = progress

    def _observe(self, result: WriteResult, seconds: float) -> None:  # type: ignore[override]
        super()._observe(result, seconds)
        p = self.progress
        with p.lock:
            p.batches += 1
            p.write_seconds += seconds
            p.stored += sum(result.stored.values())
            p.duplicates += sum(result.duplicates.values())
            p.dead_letters += len(result.dead_letters)
            p.records += result.records + len(result.dead_letters)
            if p.records >= p.target and not p.done.is_set():
                p.last_commit = time.perf_counter()
                p.done.set()


@dataclass
class IngestRun:
    seconds: float
    stored: int
    duplicates: int
    dead_letters: int
    batches: int
    write_seconds: float
    cpu_seconds: float


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ingest(
    settings: list[Settings], expected: int, share_group: str | None = None
) -> IngestRun:
    """One ingest per settings (several: one share group, as separate `swapfleet ingest`
    processes would be; their MQTT sides share this process, which in (b) handles only
    10,000 messages)."""
    progress = Progress(expected)
    services = [MeasuredIngest(s, progress, share_group) for s in settings]
    # start() returns once the writer process is up (spawned, imported, connected to
    # PostgreSQL: about a second, as any restart pays once) and the connection to the broker
    # has been initiated; it completes, and the backlog flows, only after this point, as the
    # bare subscriber's clock starts at its connect.
    # Every writer process first, so that no ingest drains the backlog while another's
    # writer is still being spawned, before the clock starts.
    for service in services:
        service.writer.start()
        setattr(service.writer, "start", lambda: None)  # noqa: B010
    for service in services:
        service.start()

    def cpu() -> float:
        # Only the ingests' threads run in this process meanwhile, plus their writer processes.
        return time.process_time() + sum(
            process_cpu_seconds(s.writer.process.pid) for s in services
        )

    cpu_started = cpu()
    started = time.perf_counter()
    finished = progress.done.wait(DRAIN_TIMEOUT_S)
    cpu_used = cpu() - cpu_started
    for service in services:
        service.stop()
    if not finished:
        raise RuntimeError(f"ingest handled {progress.records} of {expected} records")
    return IngestRun(
        progress.last_commit - started,
        progress.stored,
        progress.duplicates,
        progress.dead_letters,
        progress.batches,
        progress.write_seconds,
        cpu_used,
    )


@dataclass
class Check:
    rows: int
    distinct: int
    dead_letters: int
    session_samples: int


def check(database_url: str) -> Check:
    with psycopg.connect(database_url) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (battery_serial, ts)) FROM charging_samples"
        ).fetchone() or (0, 0)
        (dead,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone() or (0,)
        (sessions,) = conn.execute(
            "SELECT coalesce(sum(sample_count), 0) FROM charging_sessions"
        ).fetchone() or (0,)
    return Check(int(rows), int(distinct), int(dead), int(sessions))


# ---- one scenario ----------------------------------------------------------------------------


@dataclass
class Result:
    per_message: int
    messages: int
    records: int
    payload_bytes: int
    publish_s: float
    figures: dict[str, float] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    ok: bool = True
    load: str = ""


def scenario(
    database_url: str,
    broker: BenchBroker,
    stations: list[SeededStation],
    n_messages: int,
    per_message: int,
    ingests: int = 1,
) -> Result:
    run_id = uuid.uuid4().hex[:8]
    ingest_settings = [
        Settings(
            environment="test",
            database_url=database_url,
            mqtt_url=broker.url,
            mqtt_topic_prefix=PREFIX,
            ingest_client_id=f"bench-ingest-{i}-{run_id}",
            ingest_metrics_port=None,
        )
        for i in range(ingests)
    ]
    settings = ingest_settings[0]
    share_group = f"bench{run_id}" if ingests > 1 else None
    data = build_dataset(stations, n_messages, per_message)
    n = len(data.messages)
    reset_telemetry(database_url)
    with psycopg.connect(database_url) as conn:
        create_partitions(conn, CHARGING.table, {month_start(r[1]) for r in data.rows})

    batch = settings.ingest_batch_max_records
    a1 = baseline_copy(database_url, data.rows, batch, staged=False)
    reset_telemetry(database_url)
    a2 = baseline_copy(database_url, data.rows, batch, staged=True)
    reset_telemetry(database_url)

    bare_id, validate_id = f"bench-bare-{uuid.uuid4().hex[:8]}", f"bench-val-{uuid.uuid4().hex[:8]}"
    for client_id in (bare_id, validate_id):
        create_session(broker.port, client_id, settings)
    for each in ingest_settings:
        create_session(broker.port, each.ingest_client_id, settings, share_group)
    publisher = Publisher(broker.port)
    started = time.perf_counter()
    publish_backlog(publisher, data.messages)
    publish_s = time.perf_counter() - started

    b1 = drain_bare(broker.port, bare_id, settings, n, lambda msg: orjson.loads(msg.payload))
    now = datetime.now(UTC)

    def validate(msg: mqtt.MQTTMessage) -> None:
        decoded = decode_message(msg.topic, bytes(msg.payload), settings=settings, received_at=now)
        assert not decoded.dead_letters

    b2 = drain_bare(broker.port, validate_id, settings, n, validate)
    drop_session(broker.port, bare_id)
    drop_session(broker.port, validate_id)

    first = run_ingest(ingest_settings, data.records, share_group)
    after_first = check(database_url)

    publish_backlog(publisher, data.messages)
    publisher.close()
    second = run_ingest(ingest_settings, data.records, share_group)
    after_second = check(database_url)
    for each in ingest_settings:
        drop_session(broker.port, each.ingest_client_id)

    result = Result(per_message, n, data.records, data.payload_bytes, publish_s)
    result.load = load_average()
    result.figures = {
        "A1 rows/s": a1,
        "A2 rows/s": a2,
        "B1 msg/s": n / b1,
        "B2 msg/s": n / b2,
        "I s": first.seconds,
        "I rec/s": data.records / first.seconds,
        "I msg/s": n / first.seconds,
        "I batches": first.batches,
        "I write s": first.write_seconds,
        "I cpu s": first.cpu_seconds,
        "R cpu s": second.cpu_seconds,
        "R s": second.seconds,
        "R rec/s": data.records / second.seconds,
        "R msg/s": n / second.seconds,
    }
    expectations = [
        ("ingest stored every record", first.stored == data.records),
        ("no duplicates on the first pass", first.duplicates == 0),
        ("no dead letters", first.dead_letters == 0 and second.dead_letters == 0),
        ("rows counted = records", after_first.rows == data.records),
        ("rows distinct (serial, ts)", after_first.distinct == data.records),
        ("charging sessions account for every sample", after_first.session_samples == data.records),
        ("redelivery stored nothing new", second.stored == 0),
        ("redelivery saw every record as a duplicate", second.duplicates == data.records),
        ("rows unchanged after redelivery", after_second.rows == data.records),
        ("sessions unchanged after redelivery", after_second.session_samples == data.records),
    ]
    for label, passed in expectations:
        result.checks.append(f"{'ok  ' if passed else 'FAIL'} {label}")
        result.ok = result.ok and passed
    return result


def load_average() -> str:
    """The machine is shared: a busy neighbour shows here, and the ratios still hold."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def report(result: Result, name: str) -> None:
    f = result.figures
    out()
    out(
        f"== ({name}) {result.records:,} charging records in {result.messages:,} QoS 1 messages of"
        f" {result.per_message} record(s), {result.payload_bytes / result.messages:.0f} bytes"
        f" per message (backlog published in {result.publish_s:.1f} s, not timed)"
    )
    width = 66
    out(f"{'measurement':<{width}} {'rate':>14}  {'ratio':>8}")
    rows = [
        ("A1 raw binary COPY into charging_samples", f"{f['A1 rows/s']:,.0f} rows/s", ""),
        ("A2 raw binary COPY -> staging -> INSERT ON CONFLICT",
         f"{f['A2 rows/s']:,.0f} rows/s", ""),
        ("B1 bare paho subscriber, orjson decode only", f"{f['B1 msg/s']:,.0f} msg/s", ""),
        ("B2 bare subscriber + the ingest's decode/validation, no DB",
         f"{f['B2 msg/s']:,.0f} msg/s", f"{f['B2 msg/s'] / f['B1 msg/s']:.2f} B1"),
        (f"I  ingest end to end ({f['I s']:.1f} s, {f['I batches']:.0f} commits): records",
         f"{f['I rec/s']:,.0f} rec/s",
         f"{f['I rec/s'] / f['A2 rows/s']:.2f} A2"),
        ("   ... same run vs raw COPY", "", f"{f['I rec/s'] / f['A1 rows/s']:.2f} A1"),
        ("   ... same run: messages", f"{f['I msg/s']:,.0f} msg/s",
         f"{f['I msg/s'] / f['B1 msg/s']:.2f} B1"),
        (f"R  redelivery dedup pass ({f['R s']:.1f} s): records", f"{f['R rec/s']:,.0f} rec/s",
         f"{f['R rec/s'] / f['I rec/s']:.2f} I"),
        ("   ... messages", f"{f['R msg/s']:,.0f} msg/s", f"{f['R msg/s'] / f['B1 msg/s']:.2f} B1"),
    ]  # fmt: skip
    for label, rate, ratio in rows:
        out(f"{label:<{width}} {rate:>14}  {ratio:>8}")
    out(
        f"   ingest: writer process busy {f['I write s']:.1f} s of {f['I s']:.1f} s"
        f" ({f['I write s'] / f['I s']:.0%}, decode/validate/COPY/dedup/derived/commit);"
        f" process CPU {f['I cpu s'] / f['I s']:.2f} cores (dedup pass"
        f" {f['R cpu s'] / f['R s']:.2f}); load average {result.load}"
    )
    if name == "a":
        share = f["I msg/s"] / f["B1 msg/s"]
        verdict = "met" if share >= 0.8 else "NOT met"
        out(f"   target (a): ingest >= 0.8 x bare subscriber: {share:.2f} x, {verdict}")
    if name == "b":
        verdict = "met" if f["I rec/s"] >= 60_000 else "NOT met"
        out(
            f"   target (b): >= 60,000 records/s stored: {f['I rec/s']:,.0f} records/s,"
            f" {verdict}; {f['I rec/s'] / f['A2 rows/s']:.2f} x raw COPY + ON CONFLICT"
        )
    for line in result.checks:
        out("   " + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario", choices=["a", "b", "custom"], nargs="+", default=["a", "b"],
        help="issue 3 (a): 200,000 messages of 1 record; (b): 10,000 messages of 100 records"
        " (1,000,000 records); custom: --messages of --records-per-message (default: a b)",
    )  # fmt: skip
    parser.add_argument("--messages", type=int, default=20_000, help="custom scenario only")
    parser.add_argument(
        "--records-per-message", type=int, default=10, metavar="K", help="custom scenario only"
    )
    parser.add_argument("--stations", type=int, default=8)
    parser.add_argument("--batteries-per-station", type=int, default=10)
    parser.add_argument("--database", default="swapfleet_bench_ingest")
    parser.add_argument(
        "--ingests",
        type=int,
        default=1,
        help="ingests in one MQTT 5 share group, each with its own writer process (default 1)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    # Each run ends with a normal disconnect, which the ingest logs as a warning.
    logging.getLogger("app.ingest.client").setLevel(logging.ERROR)

    out(
        f"bench_ingest: {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC,"
        f" load average {load_average()}"
    )
    started = time.perf_counter()
    database_url = recreate_database(args.database)
    stations = seed(database_url, args.stations, args.batteries_per_station)
    broker = BenchBroker()
    ok = True
    try:
        broker.wait_ready()
        out(
            f"database {args.database} (migrated), mosquitto :{broker.port},"
            f" {args.stations} stations x {args.batteries_per_station} batteries,"
            f" {args.ingests} ingest(s)"
        )
        sizes = {"a": (200_000, 1), "b": (10_000, 100)}
        for name in args.scenario:
            n, per_message = sizes.get(name, (args.messages, args.records_per_message))
            result = scenario(database_url, broker, stations, n, per_message, args.ingests)
            report(result, name)
            ok = ok and result.ok
    finally:
        broker.close()
    verdict = "all checks ok" if ok else "CHECKS FAILED"
    out(f"\ntotal {time.perf_counter() - started:.0f} s; {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
