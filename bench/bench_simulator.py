"""How many records per second the simulator generates, and publishes, on one core.

    python bench/bench_simulator.py                                   # generation only
    python bench/bench_simulator.py --mqtt mqtt://127.0.0.1:1883      # and publishing
    python bench/bench_simulator.py --scenario all --days 1           # each scenario's fleet

With --scenario (a name of simulators/scenarios.py, or `all`), the fleet is that scenario's at
its default size instead of the two-wheeler standard fleet, and the script also prints the
records per simulated hour it generates, by kind: the load a backend takes from it in real
time.

Every figure sits next to a raw baseline measured in the same process, on the same core, right
before it, so that the ratios hold on a noisy machine:

* generation: the standard fleet (20 stations, 300 vehicles) run flat out into a sink that only
  counts, against building the same number of telemetry-shaped dicts with rounded floats (the
  floor of any simulator that hands out dicts), and against orjson-encoding them in batches;
* publishing: the fleet run flat out through simulators.backend.SharedMqttSink (one MQTT
  connection, QoS 1, per-topic batches), timed until the broker has acknowledged everything,
  against a bare paho loop that publishes the same number of messages of the same mean size
  with QoS 1 and the same in-flight window, and waits for every PUBACK.

Each measurement is repeated (--repeat) and the best run counts, for the simulator and its
baselines alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices.client import BrokerSettings  # noqa: E402
from devices.contract import RecordKind  # noqa: E402
from simulators.backend import SharedMqttSink  # noqa: E402
from simulators.fleet import Fleet, FleetConfig  # noqa: E402
from simulators.scenarios import SCENARIOS, scenario  # noqa: E402
from simulators.sinks import InMemorySink, Record  # noqa: E402


class EncodingSink:
    """What any real sink must do at least: serialize each message once."""

    def __init__(self) -> None:
        self.bytes = 0

    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        self.bytes += len(orjson.dumps({"records": records}))


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def baseline_dicts(n: int) -> float:
    """Records per CPU second for building n telemetry-shaped dicts with rounded floats: the
    floor of any simulator that hands out dicts."""
    started = time.process_time()
    records = []
    for i in range(n):
        x = i * 0.001
        records.append(
            {
                "battery_serial": "sim1-b000001",
                "ts": "2025-01-06T08:00:00Z",
                "soc_pct": round(50.0 + x, 1),
                "odometer_km": round(1000.0 + x, 2),
                "pack_voltage_v": round(52.0 + x, 2),
                "pack_current_a": round(-20.0 - x, 2),
                "temp_c_max": round(30.0 + x, 1),
                "lat": round(12.97 + x, 6),
                "lon": round(77.59 + x, 6),
            }
        )
    return n / (time.process_time() - started)


def baseline_encode(n: int, batch: int = 100) -> float:
    record = {
        "battery_serial": "sim1-b000001", "ts": "2025-01-06T08:00:00Z", "soc_pct": 50.1,
        "odometer_km": 1000.12, "pack_voltage_v": 52.01, "pack_current_a": -20.5,
        "temp_c_max": 30.2, "lat": 12.971234, "lon": 77.591234,
    }  # fmt: skip
    records = [record] * batch
    started = time.process_time()
    for _ in range(n // batch):
        orjson.dumps({"records": records})
    return n / (time.process_time() - started)


def run_fleet(config: FleetConfig, sink: object) -> tuple[int, float, float]:
    """Records, wall seconds and CPU seconds of one flat-out run."""
    fleet = Fleet(config, sink)  # type: ignore[arg-type]
    started = time.perf_counter()
    cpu = time.process_time()
    stats = fleet.run()
    return stats.total_records, time.perf_counter() - started, time.process_time() - cpu


def baseline_paho(
    broker: BrokerSettings, topic: str, messages: int, payload_bytes: int, window: int
) -> float:
    """Seconds for a bare paho client to publish `messages` QoS 1 messages and get every PUBACK."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-paho-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.on_publish = lambda *a: acked.release()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("bare paho client did not connect")
        payload = b"x" * payload_bytes
        started = time.perf_counter()
        for _ in range(messages):
            client.publish(topic, payload, qos=1)
        for _ in range(messages):
            if not acked.acquire(timeout=60):
                raise RuntimeError("bare paho client: PUBACKs missing")
        return time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()


def bench_generation(config: FleetConfig, repeat: int) -> float:
    best_sim = best_wall = best_dicts = best_enc = 0.0
    records = 0
    for _ in range(repeat):
        records, seconds, cpu = run_fleet(config, InMemorySink(keep_records=False))
        best_sim = max(best_sim, records / cpu)
        best_wall = max(best_wall, records / seconds)
        best_dicts = max(best_dicts, baseline_dicts(records))
        best_enc = max(best_enc, baseline_encode(records))
    out(
        f"generated:             {records:>10,} records, best {best_sim:>10,.0f}/CPU-s "
        f"({best_wall:,.0f}/s of wall time)"
    )
    ratio = best_sim / best_dicts
    out(f"baseline plain dicts:  {best_dicts:>10,.0f}/s  (simulator at {ratio:.3f}x)")
    out(f"baseline orjson batch: {best_enc:>10,.0f}/s  (simulator at {best_sim / best_enc:.3f}x)")
    encoding = EncodingSink()
    records_enc, _, cpu_enc = run_fleet(config, encoding)
    out(
        f"generated + encoded:   {records_enc:>10,} records in {cpu_enc:6.2f} CPU-s = "
        f"{records_enc / cpu_enc:>10,.0f}/CPU-s ({encoding.bytes / records_enc:.0f} bytes/record)"
    )
    return best_sim


def bench_publishing(config: FleetConfig, url: str, repeat: int, window: int) -> None:
    broker = BrokerSettings.from_url(url)
    best_rate = 0.0
    best_messages = 0
    best_bytes = 0
    best_records = 0
    for _ in range(repeat):
        prefix = f"swapfleet-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}/v1"
        sink = SharedMqttSink(broker, prefix=prefix, inflight_window=window).start()
        fleet = Fleet(config, sink)
        started = time.perf_counter()
        cpu = time.process_time()
        stats = fleet.run()
        generated_at = time.perf_counter()
        complete = sink.close(timeout=300.0)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if not complete:
            raise SystemExit(f"publishing INCOMPLETE: {sink.stats}")
        published = sum(sink.stats.records_published.values())
        superseded = sink.stats.statuses_superseded
        if published + superseded != stats.total_records:
            raise SystemExit(
                f"published {published} + superseded {superseded} records, "
                f"generated {stats.total_records}"
            )
        rate = published / elapsed
        out(
            f"published over MQTT:   {published:>10,} records in {sink.stats.messages_published:,} "
            f"messages ({superseded:,} stale station statuses superseded), generated in "
            f"{generated_at - started:5.2f} s, all acked after {elapsed:5.2f} s = {rate:>9,.0f}/s "
            f"(process CPU {cpu:5.2f} s: {published / cpu:,.0f}/CPU-s)"
        )
        if rate > best_rate:
            best_rate = rate
            best_messages = sink.stats.messages_published
            best_bytes = sink.stats.bytes_published
            best_records = published
    mean_bytes = best_bytes // max(1, best_messages)
    best_base = 0.0
    for _ in range(repeat):
        seconds = baseline_paho(
            broker,
            f"swapfleet-bench-{os.getpid()}/baseline",
            best_messages,
            mean_bytes,
            window,
        )
        best_base = max(best_base, best_messages / seconds)
    out(
        f"baseline bare paho:    {best_messages:,} messages of {mean_bytes:,} bytes, QoS 1, "
        f"window {window}: best {best_base:,.0f} messages/s"
    )
    out(
        f"  simulator end to end {best_rate:,.0f} records/s; bare paho would carry its messages "
        f"at {best_base * best_records / best_messages:,.0f} records/s (simulator at "
        f"{best_rate / (best_base * best_records / best_messages):.3f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--vehicles", type=int, default=300)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mqtt", help="also publish to this broker, e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--mqtt-days", type=float, default=2.0)
    parser.add_argument("--window", type=int, default=20, help="MQTT in-flight window")
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    parser.add_argument(
        "--scenario", choices=[*SCENARIOS, "all"], help="a scenario's fleet (or all of them)"
    )
    args = parser.parse_args()

    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        core = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {core})
        out(f"pinned to core {core} (the paho network thread shares it)")
    if args.scenario:
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        for name in names:
            bench_scenario(name, args)
        return
    config = FleetConfig(stations=args.stations, vehicles=args.vehicles, days=args.days, seed=1)
    out(f"fleet: {args.stations} stations, {args.vehicles} vehicles, {args.days} simulated days")
    bench_generation(config, args.repeat)

    if args.mqtt:
        mqtt_config = FleetConfig(
            stations=args.stations, vehicles=args.vehicles, days=args.mqtt_days, seed=1
        )
        out(f"publishing to {args.mqtt}: {args.mqtt_days} simulated days")
        bench_publishing(mqtt_config, args.mqtt, args.repeat, args.window)


def bench_scenario(name: str, args: argparse.Namespace) -> None:
    spec = scenario(name)
    config = spec.config(days=args.days, seed=1)
    out(
        f"scenario {name}: {spec.stations} stations, {spec.vehicles} vehicles, "
        f"{args.days} simulated days"
    )
    sink = InMemorySink(keep_records=False)
    fleet = Fleet(config, sink)
    stats = fleet.run()
    hours = args.days * 24.0
    slots = sum(len(s.slots) for s in fleet.stations)
    per_hour = ", ".join(
        f"{kind} {count / hours:,.0f}" for kind, count in sorted(stats.records.items())
    )
    out(
        f"records per simulated hour: {per_hour} (total {stats.total_records / hours:,.0f}; "
        f"{stats.messages / hours:,.0f} messages; {slots} slots, {stats.swaps / hours:.1f} "
        f"swaps)"
    )
    bench_generation(config, args.repeat)
    if args.mqtt:
        out(f"publishing to {args.mqtt}: {args.mqtt_days} simulated days")
        bench_publishing(spec.config(days=args.mqtt_days, seed=1), args.mqtt, args.repeat,
                         args.window)  # fmt: skip


if __name__ == "__main__":
    main()
