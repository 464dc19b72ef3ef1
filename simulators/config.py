"""What a simulated fleet run is (its parameters) and what it counts while it runs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from simulators.catalog import TWO_AND_THREE_WHEELERS, Catalog

DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)


@dataclass(frozen=True)
class FleetConfig:
    stations: int = 20
    vehicles: int = 300
    days: float = 30.0
    seed: int = 1
    start: datetime = DEFAULT_START
    # Prefixes every code, so runs with different prefixes can share one backend; "" leaves
    # the codes bare (the demo network of `swapfleet up`, simulators.scenarios.DEMO).
    code_prefix: str | None = None
    slots_per_station: int = 12
    station_power_kw: float = 24.0
    charger_kw: float = 3.3
    target_soc_pct: float = 90.0
    soh_floor_pct: float = 70.0
    swap_soc_pct: float = 25.0
    faulty_share: float = 0.05
    charge_step_s: int = 60
    telemetry_interval_s: int = 60
    vehicle_batch: int = 10
    status_interval_s: int = 300
    truth_interval_s: int = 86_400
    capacity_max_start_soc_pct: float = 20.0
    initial_age_days_max: float = 540.0
    center_lat: float = 12.9716
    center_lon: float = 77.5946
    radius_km: float = 10.0
    timezone: str = "Asia/Kolkata"
    utc_offset_h: float = 5.5
    ambient_mean_c: float = 27.0
    ambient_swing_c: float = 5.0
    # The packs, makers and vehicle models the world is built from.
    catalog: Catalog = TWO_AND_THREE_WHEELERS

    @property
    def prefix(self) -> str:
        return f"sim{self.seed}" if self.code_prefix is None else self.code_prefix

    def code(self, key: str) -> str:
        """A code of this run: the key behind the prefix, or the bare key without one."""
        prefix = self.prefix
        return f"{prefix}-{key}" if prefix else key


@dataclass
class FleetStats:
    sim_time: int = 0
    events: int = 0
    messages: int = 0
    records: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    swaps: int = 0
    swaps_rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    swap_mismatches: int = 0
    waits: int = 0
    redirects: int = 0
    stranded: int = 0
    charges_completed: int = 0

    @property
    def total_records(self) -> int:
        return sum(self.records.values())
