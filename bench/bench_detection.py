"""How well the reports find the simulator's planted faults and state fade rates, on a fleet
whose truth the simulator knows (issue 14).

    python bench/bench_detection.py      # the issue's run: 8 stations, 120 vehicles, 120 days
    python bench/bench_detection.py --seed 42 --stations 3 --vehicles 40

The fleet runs in memory with the command-line simulator's measurement settings (capacity
measured only on charges that start at or below 20 % SoC, packs up to 540 days old), except
coarser steps (charging samples every 300 s, vehicle telemetry every 900 s: the ageing laws
do not depend on them, and the run is several times shorter). Its records go through the
real ingest path into the database swapfleet_bench_detection (recreated, dropped after), as
in tests/fixtures/ground_truth_world.py, and the reports are read through the API over the
whole run: the fleet summary's anomalies (the same snapshot the batteries report and the
passports read), and every battery's fade rates against the true ones.

Prints, per fault kind: planted, flagged, recall, precision, the missed and the false
alarms; then, per fade rate: within 10 % of the truth, outside it but inside the reported
interval, null with a reason, and misses (none of these).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("SWAPFLEET_TEST_DB", "swapfleet_bench_detection")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core import clock  # noqa: E402
from simulators.fleet import FleetConfig  # noqa: E402
from tests.fixtures.ground_truth_world import (  # noqa: E402
    World,
    judge_passport_cycles,
    judge_rates,
    score_detection,
    simulated_world,
    truths,
)

DB_NAME = "swapfleet_bench_detection"


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def details(world: World) -> None:
    """Each planted or flagged battery: its fault, its anomalies and its figures."""
    faults = world.fleet.faulty_serials()
    found: dict[str, list[str]] = {}
    for a in world.summary["anomalies"]:
        found.setdefault(a["serial"], []).append(f"{a['kind']}: {a['reason']} [{a['evidence']}]")
    true = truths(world)
    for serial in sorted(set(faults) | set(found)):
        row = world.rows[serial]
        t = true.get(serial)
        out(
            f"\n{serial} planted {faults.get(serial, 'none')}; state {row['state']},"
            f" SoH {row['soh_start_pct']} -> {row['soh_end_pct']}, age {row['age_days']} d,"
            f" {row['capacity_records']} capacity records, fade/yr"
            f" {row['capacity_fade_pct_per_year']} ({row['capacity_fade_pct_per_year_low']}"
            f" to {row['capacity_fade_pct_per_year_high']}),"
            f" true {None if t is None else round(t.fade_pct_per_year, 2)},"
            f" cycles {row['equivalent_full_cycles']}, swaps {row['swaps']}"
        )
        for line in found.get(serial, ["not flagged"]):
            out(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=8)
    parser.add_argument("--vehicles", type=int, default=120)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--faulty-share", type=float, default=0.08)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--charge-step-s", type=int, default=300)
    parser.add_argument("--telemetry-interval-s", type=int, default=900)
    parser.add_argument(
        "--details", action="store_true", help="every planted or flagged battery's figures"
    )
    args = parser.parse_args()
    today = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    config = FleetConfig(
        stations=args.stations,
        vehicles=args.vehicles,
        days=float(args.days),
        seed=args.seed,
        start=today - timedelta(days=args.days + 1),
        faulty_share=args.faulty_share,
        charge_step_s=args.charge_step_s,
        telemetry_interval_s=args.telemetry_interval_s,
    )
    started = time.perf_counter()
    with simulated_world(DB_NAME, config) as world:
        elapsed = time.perf_counter() - started
        out(
            f"seed {args.seed}: {args.stations} stations, {args.vehicles} vehicles,"
            f" {args.days} days, {len(world.fleet.batteries)} batteries,"
            f" {len(world.fleet.faulty_serials())} planted faults ({elapsed:.0f} s: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in world.timings.items())
            + ")"
        )
        out("\n| kind | planted | flagged | recall | precision | missed | false alarms |")
        out("| --- | --- | --- | --- | --- | --- | --- |")
        for kind, s in score_detection(world, world.summary["anomalies"]).items():
            out(
                f"| {kind} | {s.planted} | {s.flagged} | {s.recall:.2f} | {s.precision:.2f}"
                f" | {', '.join(s.missed) or '-'} | {', '.join(s.false_alarms) or '-'} |"
            )
        other = sorted({a["kind"] for a in world.summary["anomalies"]} - {
            "fast_fade", "hot_cell", "cell_imbalance"})  # fmt: skip
        for kind in other:
            serials = [a["serial"] for a in world.summary["anomalies"] if a["kind"] == kind]
            faults = world.fleet.faulty_serials()
            out(
                f"\n{kind}: {len(serials)} batteries"
                f" ({sum(s in faults for s in serials)} of them planted faults)"
            )
        out(f"\nbatteries with a true fade (3 capacity records or more): {len(truths(world))}")
        out("\n| rate | judged | within 10 % | interval contains truth | null, reason | misses |")
        out("| --- | --- | --- | --- | --- | --- |")
        verdicts = {
            field: judge_rates(world, field, truth_of)
            for field, truth_of in (
                ("capacity_fade_pct_per_year", "fade_pct_per_year"),
                ("capacity_fade_pct_per_1000_cycles", "fade_pct_per_1000_cycles"),
            )
        }
        for field, v in verdicts.items():
            out(
                f"| {field} | {v.judged} | {v.within_10pct} | {v.interval_contains}"
                f" | {v.null_with_reason} | {len(v.misses)} |"
            )
            for serial, detail in sorted(v.misses.items()):
                out(f"  miss {serial}: {detail}")
        out("\nAre the intervals right? Each reported rate's error in its own standard errors,")
        out("against the count a normal error would give if they are (in brackets; Student's t,")
        out("with the fits' 6 or more degrees of freedom, expects a little more):\n")
        out("| rate | rates with an interval | beyond 1.96 (expect) | 2.58 | 3.29 | largest |")
        out("| --- | --- | --- | --- | --- | --- |")
        for field, v in verdicts.items():
            z = v.errors_in_se
            cells = [
                f"{sum(abs(e) > q for e in z)} ({p * len(z):.1f})"
                for q, p in ((1.96, 0.05), (2.576, 0.01), (3.291, 0.001))
            ]
            largest = max(z, key=abs) if z else float("nan")
            out(f"| {field} | {len(z)} | {' | '.join(cells)} | {largest:+.2f} |")
        cycles = judge_passport_cycles(world)
        errors = sorted(cycles.errors.values())
        spread = (
            f", median error {errors[len(errors) // 2]:.2%}, max {errors[-1]:.2%}" if errors else ""
        )
        out(
            "\npassport cycles (issue 14: within 2 % or the wire's 1 cycle of the truth):"
            f" {cycles.with_health_record} batteries sent a health record,"
            f" {len(cycles.failures)} failures{spread}"
        )
        for serial, detail in sorted(cycles.failures.items()):
            out(f"  {serial}: {detail}")
        if args.details:
            details(world)


if __name__ == "__main__":
    main()
