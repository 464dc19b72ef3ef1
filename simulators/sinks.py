"""Where a simulated fleet's output goes: records, swaps and the ground truth.

The fleet only talks to these protocols, so a test keeps everything in memory while the CLI
plugs in the real MQTT publishing client and the REST swap client.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from devices.contract import RecordKind
from devices.rest import SwapResult as SwapResult  # re-exported: recorders answer with it
from simulators.catalog import FleetManifest

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SwapRequest:
    station_code: str
    vin: str
    removed_battery_serial: str
    removed_soc_pct: float
    removed_soh_pct: float
    removed_to_slot: int
    # The station's own pick by the backend's rule; a recorder may leave the choice to the backend.
    proposed_battery_serial: str
    proposed_from_slot: int
    installed_soc_pct: float
    installed_soh_pct: float
    started_at: str
    finished_at: str
    idempotency_key: str


class RecordSink(Protocol):
    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        """Hand over one message's records; identity is the station code or the VIN."""


class SwapRecorder(Protocol):
    def record_swap(self, request: SwapRequest) -> SwapResult: ...


class TruthSink(Protocol):
    def write(self, row: Record) -> None: ...


class FleetRegistrar(Protocol):
    def register(self, manifest: FleetManifest) -> None: ...


class AcceptProposedSwaps:
    """A backend stand-in that agrees with the station's pick (the same allocation rule)."""

    def record_swap(self, request: SwapRequest) -> SwapResult:
        return SwapResult(True, request.proposed_battery_serial)


@dataclass
class InMemorySink:
    """Keeps every message, swap and truth row; for tests and benchmarks."""

    keep_records: bool = True
    messages: int = 0
    record_counts: dict[RecordKind, int] = field(default_factory=lambda: defaultdict(int))
    records: dict[RecordKind, list[tuple[str, Record]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    swaps: list[tuple[SwapRequest, SwapResult]] = field(default_factory=list)
    truth: list[Record] = field(default_factory=list)
    recorder: SwapRecorder = field(default_factory=AcceptProposedSwaps)

    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        self.messages += 1
        self.record_counts[kind] += len(records)
        if self.keep_records:
            self.records[kind].extend((identity, r) for r in records)

    def record_swap(self, request: SwapRequest) -> SwapResult:
        result = self.recorder.record_swap(request)
        self.swaps.append((request, result))
        return result

    def write(self, row: Record) -> None:
        self.truth.append(row)


TRUTH_FIELDS = (
    "ts", "event", "battery_serial", "pack_type", "fault", "capacity_ah", "capacity_kwh",
    "soh_pct", "resistance_mohm", "equivalent_full_cycles", "calendar_loss_pct",
    "cycle_loss_pct", "other_loss_pct",
)  # fmt: skip


class GroundTruthWriter:
    """True state of each battery over time, as JSON lines (.jsonl) or CSV (anything else)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jsonl = path.suffix in (".jsonl", ".ndjson")
        self._file: io.BufferedWriter | io.TextIOWrapper
        if self._jsonl:
            self._file = path.open("wb")
            self._csv = None
        else:
            text = path.open("w", newline="", encoding="utf-8")
            self._file = text
            self._csv = csv.DictWriter(text, fieldnames=TRUTH_FIELDS, extrasaction="ignore")
            self._csv.writeheader()
        self.rows = 0

    def write(self, row: Record) -> None:
        self.rows += 1
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._file.write(orjson.dumps(row) + b"\n")  # type: ignore[arg-type]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> GroundTruthWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_ground_truth(path: Path) -> list[Record]:
    """Rows as written (CSV values come back as strings, numbers converted)."""
    if path.suffix in (".jsonl", ".ndjson"):
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
    rows: list[Record] = []
    with path.open(newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row: Record = dict(raw)
            for key in TRUTH_FIELDS[5:]:
                row[key] = float(row[key])
            rows.append(row)
    return rows
