"""The rows the reports' queries return, by name and type, so that mypy checks every column the
reports read. The queries in repository.py select these columns by these names; `all_of` builds
rows from a result's mappings by their field names (a column the SQL lacks is a KeyError at once,
in the tests, not a wrong figure), and ignores columns no report reads.
"""

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any, Self

from sqlalchemy import RowMapping


class NamedRow:
    __slots__ = ()

    @classmethod
    def of(cls, mapping: RowMapping) -> Self:
        return cls.all_of([mapping])[0]

    @classmethod
    def all_of(cls, mappings: Iterable[RowMapping]) -> list[Self]:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        values = itemgetter(*names)  # every row class has two fields or more: a tuple
        return [cls(*values(m)) for m in mappings]


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
# measured 3 x slower for the 60 fields of a BatteryWindow (5,000 of them per CSV).
@dataclass(slots=True)
class CohortInputs(NamedRow):
    """What the anomaly cohorts and the fleet's energy need of a battery's window
    (repository.ANOMALY_INPUTS)."""

    id: int
    serial: str
    oem_id: int | None
    pack_type_code: str
    # text() leaves numeric columns as the driver returns them.
    nominal_capacity_ah: Decimal | float
    energy_charged_kwh: float
    charging_samples: int
    temp_spread_sum_c: float
    seconds_above_45c: float
    fit_days_n: int
    fit_days_sx: float
    fit_days_sy: float
    fit_days_sxx: float
    fit_days_sxy: float
    fit_days_syy: float
    imbalance_days: int
    imbalance_mv_per_day: float | None
    cycles_start: float | None
    cycles_start_ts: datetime | None
    cycles_end: float | None
    cycles_end_ts: datetime | None
    # The lifetime fade check and the SoH floor: the registry's and the window's latest SoH.
    manufactured_on: date | None
    soh_pct: float | None
    soh_end_pct: float | None


@dataclass(slots=True)
class BatteryWindow(CohortInputs):
    """A battery with its registry data and its figures over a window
    (repository.BATTERY_ROWS): the batteries report, its CSV and the passport."""

    state: str
    battery_cycles: float
    soh_measured_at: datetime | None
    soh_source: str | None
    cycles_measured_at: datetime | None
    cycles_source: str | None
    registered_energy_throughput_kwh: float | None
    registered_capacity_throughput_ah: float | None
    health_records: int
    chemistry: str
    nominal_energy_kwh: Decimal | float
    nominal_voltage_v: Decimal | float
    oem_code: str | None
    resistance_first_mohm: float | None
    energy_discharged_kwh: float
    charging_sessions: int
    seconds_below_0c: float
    fit_cycles_n: int
    fit_cycles_sx: float
    fit_cycles_sy: float
    fit_cycles_sxx: float
    fit_cycles_sxy: float
    fit_cycles_syy: float
    health_rejections: int
    capacity_throughput_ah: float
    swaps: int
    max_temp_c: float | None
    last_seen_at: datetime | None
    first_day: date | None
    soh_start_pct: float | None
    resistance_end_mohm: float | None
    capacity_last_ah: float | None
    capacity_last_kwh: float | None
    capacity_last_ts: datetime | None


@dataclass(slots=True)
class SohPoint(NamedRow):
    """A battery's latest health record in a window (repository.SOH_POINTS)."""

    serial: str
    manufactured_on: date | None
    battery_cycles: float
    soh_end_pct: float
    cycles_end: float | None


@dataclass(slots=True)
class BatteryCount(NamedRow):
    state: str
    pack_type_code: str
    n: int


@dataclass(slots=True)
class SwapCount(NamedRow):
    """Swaps of a window by outcome and reason (repository.SWAP_COUNTS)."""

    outcome: str
    reason_code: str
    n: int | Decimal


@dataclass(slots=True)
class Quarantined(NamedRow):
    serial: str
    pack_type_code: str
    soh_pct: float | None
    at: datetime | None
    note: str | None


@dataclass(slots=True)
class PassportEvidence(NamedRow):
    """repository.PASSPORT_EVIDENCE."""

    registered_at: datetime | None
    vehicle_samples: int | Decimal


@dataclass(slots=True)
class QuarantineEvent(NamedRow):
    at: datetime
    note: str | None


@dataclass(slots=True)
class AnomalySnapshot(NamedRow):
    """A window's saved anomalies (JSON objects, with the battery's oem_id) and energy
    charged by OEM ('' for batteries without one)."""

    anomalies: list[dict[str, Any]]
    energy_by_oem: dict[str, float]
    computed_at: datetime
