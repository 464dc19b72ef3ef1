"""How many records per second the simulator generates (and publishes) on one core.

    python bench/bench_simulator.py                 # generation only
    python bench/bench_simulator.py --mqtt mqtt://127.0.0.1:1883

Each figure is set next to a raw baseline measured in the same process, so the ratios hold on
a noisy machine: building the same number of plain record dicts, and orjson-encoding them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices.contract import RecordKind  # noqa: E402
from simulators.fleet import Fleet, FleetConfig  # noqa: E402
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
    """Records/s for building n telemetry-shaped dicts with rounded floats: the floor of any sim."""
    started = time.perf_counter()
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
    return n / (time.perf_counter() - started)


def baseline_encode(n: int, batch: int = 100) -> float:
    record = {
        "battery_serial": "sim1-b000001", "ts": "2025-01-06T08:00:00Z", "soc_pct": 50.1,
        "odometer_km": 1000.12, "pack_voltage_v": 52.01, "pack_current_a": -20.5,
        "temp_c_max": 30.2, "lat": 12.971234, "lon": 77.591234,
    }  # fmt: skip
    records = [record] * batch
    started = time.perf_counter()
    for _ in range(n // batch):
        orjson.dumps({"records": records})
    return n / (time.perf_counter() - started)


def run_fleet(config: FleetConfig, sink: object) -> tuple[int, float]:
    fleet = Fleet(config, sink)  # type: ignore[arg-type]
    started = time.perf_counter()
    stats = fleet.run()
    return stats.total_records, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--vehicles", type=int, default=300)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--mqtt", help="also publish to this broker, e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--mqtt-days", type=float, default=0.5)
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    args = parser.parse_args()

    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        out("pinned to one core")
    config = FleetConfig(stations=args.stations, vehicles=args.vehicles, days=args.days, seed=1)
    out(f"fleet: {args.stations} stations, {args.vehicles} vehicles, {args.days} simulated days")

    records, seconds = run_fleet(config, InMemorySink(keep_records=False))
    generated = records / seconds
    dicts = baseline_dicts(records)
    encoded = baseline_encode(records)
    out(f"generated:             {records:>10,} records in {seconds:6.2f} s = {generated:,.0f}/s")
    out(f"baseline plain dicts:  {dicts:>10,.0f}/s  (simulator at {generated / dicts:.3f}x)")
    out(f"baseline orjson batch: {encoded:>10,.0f}/s  (simulator at {generated / encoded:.3f}x)")

    encoding = EncodingSink()
    records_enc, seconds_enc = run_fleet(config, encoding)
    rate_enc = records_enc / seconds_enc
    out(
        f"generated + encoded:   {records_enc:>10,} records in {seconds_enc:6.2f} s = "
        f"{rate_enc:>10,.0f}/s ({encoding.bytes / records_enc:.0f} bytes/record)"
    )

    if args.mqtt:
        from devices.client import BrokerSettings, PublishOptions
        from simulators.backend import MqttDeviceSink

        mqtt_config = FleetConfig(
            stations=args.stations, vehicles=args.vehicles, days=args.mqtt_days, seed=1,
            code_prefix="bench",
        )  # fmt: skip
        sink = MqttDeviceSink(
            BrokerSettings.from_url(args.mqtt),
            prefix=f"swapfleet-bench-{os.getpid()}/v1",
            options=PublishOptions(batch_max_records=500, batch_interval_s=0.5),
        )
        started = time.perf_counter()
        fleet = Fleet(mqtt_config, sink)
        stats = fleet.run()
        generated_at = time.perf_counter()
        flushed = sink.close(timeout=300.0)
        elapsed = time.perf_counter() - started
        total = stats.total_records
        out(
            f"published over MQTT:   {total:>10,} records, generated in "
            f"{generated_at - started:6.2f} s, all acked after {elapsed:6.2f} s = "
            f"{total / elapsed:>10,.0f}/s ({'complete' if flushed else 'INCOMPLETE'}; "
            f"{stats.messages:,} sim messages via {len(fleet.stations) + len(fleet.vehicles)} "
            "device clients)"
        )
        out(f"  publish rate vs pure generation: {total / elapsed / generated:.3f}x")


if __name__ == "__main__":
    main()
