"""The battery passport: EU 2023/1542 Annex XIII performance and durability, over a battery's
whole life, from the daily aggregates and the registry. Only measured values are given; what the
data cannot support is null and listed in `not_derivable`, never estimated from a model."""

from datetime import datetime
from typing import NamedTuple

from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.batteries.exceptions import BatteryNotFound
from app.core import clock
from app.models import ReadingSource
from app.reports import repository as repo
from app.reports.figures import fade_not_derivable, fade_rates, resistance_increase_pct
from app.reports.schemas import (
    BatteryPassport,
    NegativeEvent,
    PassportBattery,
    PassportDurability,
    PassportNegativeEvents,
    PassportPerformance,
    Recommendation,
)
from app.reports.scope import EARLIEST_DAY, LATEST_DAY, Scope, resolve_scope, resolve_window
from app.reports.snapshots import window_snapshot

# Attributes no record of this system supports for any battery, and why.
NOT_DERIVABLE = {
    "performance.initial_power_capability_w": "no power-capability tests are recorded",
    "performance.remaining_power_capability_w": "no power-capability tests are recorded",
    "performance.power_fade_pct": "no power-capability tests are recorded",
    "performance.round_trip_efficiency_pct": (
        "charge and discharge energy are not metered over one cycle"
    ),
    "performance.self_discharge_rate_pct_per_month": "no rest-period SoC series is recorded",
    "negative_events.deep_discharge_events": "not reported by the devices",
    "negative_events.thermal_events": "not reported by the devices",
}
# The reason of a null that no rule below explains; tests/reports check that none is left.
UNEXPLAINED = "no record supports this figure"
NO_TELEMETRY = "the battery sent no charging or vehicle telemetry"
NO_HEALTH = "no BMS health record received"
NO_CAPACITY = "no capacity measurement received"


class Reading(NamedTuple):
    value: float
    measured_at: datetime | None
    source: ReadingSource | None


def latest_reading(
    from_health: float | None,
    health_ts: datetime | None,
    stored: float | None,
    stored_at: datetime | None,
    stored_source: str | None,
) -> Reading | None:
    """The newer of the latest health record's value (battery_daily) and the battery's
    stored reading (batteries, which a swap or the registration may also have set); a stored
    value without a time was given at registration and yields to any record."""
    stored_is_older = stored_at is None or health_ts is None or stored_at <= health_ts
    if from_health is not None and stored_is_older:
        return Reading(from_health, health_ts, ReadingSource.health_record)
    if stored is None or (stored_source is None and stored_at is None):
        return None
    return Reading(stored, stored_at, ReadingSource(stored_source) if stored_source else None)


def null_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Every null field of the model and its nested models, as section.field."""
    out: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is None:
            out.append(prefix + name)
        elif isinstance(value, BaseModel):
            out += null_fields(value, f"{prefix}{name}.")
    return out


def recommendations(session: Session, scope: Scope, serial: str) -> list[Recommendation]:
    """The battery's anomalies over the reports' default window, from the same snapshot as
    the fleet summary's (computed when the data changed, snapshots.py): no job to run first."""
    start, end = resolve_window(None, None)
    snapshot = window_snapshot(session, scope, start, end)
    return [
        Recommendation(
            kind=a.kind,
            reason=a.reason,
            value=a.value,
            value_low=a.value_low,
            value_high=a.value_high,
            evidence=a.evidence,
            cohort_median=a.cohort_median,
            robust_z=a.robust_z,
            window_from=start,
            window_to=end,
            detected_at=snapshot.computed_at,
        )
        for a in snapshot.anomalies
        if a.serial == serial
    ]


def passport(session: Session, principal: Principal, serial: str) -> BatteryPassport:
    scope = resolve_scope(session, principal, None)
    rows = repo.battery_rows(
        session,
        repo.BatteryQuery(EARLIEST_DAY, LATEST_DAY, oem_id=scope.oem_id, serial=serial),
        after=None,
        limit=1,
    )
    if not rows:
        # Another OEM's battery gets the same answer as a missing one.
        raise BatteryNotFound(f"battery {serial!r} not found")
    row = rows[0]
    evidence = repo.passport_evidence(session, row.id)
    per_1000, per_year = fade_rates(row)
    rated_ah = float(row.nominal_capacity_ah)
    rated_kwh = float(row.nominal_energy_kwh)
    remaining_ah = row.capacity_last_ah
    remaining_kwh = row.capacity_last_kwh
    # Why each null is null; only measured (or registered) values are given, nothing is
    # filled in from a model.
    reasons = dict(NOT_DERIVABLE)
    soh = latest_reading(
        row.soh_end_pct, row.cycles_end_ts, row.soh_pct, row.soh_measured_at, row.soh_source
    )
    cycles = latest_reading(
        row.cycles_end, row.cycles_end_ts, row.battery_cycles, row.cycles_measured_at,
        row.cycles_source,
    )  # fmt: skip
    # Time series (throughput, time at temperature) rest on charging and vehicle samples.
    sampled = row.charging_samples > 0 or int(evidence.vehicle_samples) > 0
    history_kwh = row.registered_energy_throughput_kwh
    history_ah = row.registered_capacity_throughput_ah
    energy = _plus(history_kwh, row.energy_charged_kwh if sampled else None)
    capacity = _plus(history_ah, row.capacity_throughput_ah if sampled else None)
    has_history = history_kwh is not None or history_ah is not None
    throughput_from = row.manufactured_on if has_history else row.first_day if sampled else None
    throughput_to = row.last_seen_at if sampled else evidence.registered_at if has_history else None

    for name, reason in (
        ("performance.remaining_capacity_ah", NO_CAPACITY),
        ("performance.remaining_capacity_measured_at", NO_CAPACITY),
        ("performance.capacity_fade_pct", NO_CAPACITY),
        ("performance.remaining_energy_kwh", NO_CAPACITY),
        ("performance.state_of_certified_energy_pct", NO_CAPACITY),
        ("performance.internal_resistance_initial_mohm", NO_HEALTH),
        ("performance.internal_resistance_current_mohm", NO_HEALTH),
        ("performance.internal_resistance_measured_at", NO_HEALTH),
        ("performance.internal_resistance_increase_pct", NO_HEALTH),
        ("durability.energy_discharged_kwh", NO_TELEMETRY),
        ("durability.time_above_45c_h", NO_TELEMETRY),
        ("durability.time_below_0c_h", NO_TELEMETRY),
        ("durability.max_temp_c", "no temperature was reported"),
        ("durability.first_seen_on", "no record received"),
        ("durability.last_seen_at", "no record received"),
        ("battery.manufactured_on", "not given at registration"),
    ):
        reasons.setdefault(name, reason)
    # A fade rate's interval is null with the rate, for the rate's reason.
    for name, reason in fade_not_derivable(per_1000, per_year, "performance.").items():
        reasons.update({name: reason, f"{name}_low": reason, f"{name}_high": reason})
    no_soh = "no BMS health record received, and none given at registration or at a swap"
    reasons["performance.state_of_health_pct"] = no_soh
    reasons["performance.state_of_health_source"] = no_soh
    reasons["performance.state_of_health_measured_at"] = (
        no_soh if soh is None else "given at registration: when it was measured is unknown"
    )
    no_cycles = "no BMS health record received, and none given at registration"
    reasons["durability.equivalent_full_cycles"] = no_cycles
    reasons["durability.equivalent_full_cycles_source"] = no_cycles
    reasons["durability.equivalent_full_cycles_measured_at"] = (
        no_cycles if cycles is None else "given at registration: when it was counted is unknown"
    )
    for name in ("energy_throughput_kwh", "capacity_throughput_ah"):
        reasons[f"durability.{name}"] = f"{NO_TELEMETRY}, and no history given at registration"
    reasons["durability.energy_throughput_at_registration_kwh"] = "not given at registration"
    reasons["durability.capacity_throughput_at_registration_ah"] = "not given at registration"
    reasons["durability.throughput_from"] = (
        "the history given at registration starts at manufacture, whose date is not known"
        if has_history
        else NO_TELEMETRY
    )
    reasons["durability.throughput_to"] = NO_TELEMETRY

    result = BatteryPassport(
        generated_at=clock.now(),
        battery=PassportBattery(
            serial=row.serial,
            pack_type_code=row.pack_type_code,
            chemistry=row.chemistry,
            manufactured_on=row.manufactured_on,
            state=row.state,
            rated_capacity_ah=rated_ah,
            rated_energy_kwh=rated_kwh,
            nominal_voltage_v=float(row.nominal_voltage_v),
        ),
        performance=PassportPerformance(
            remaining_capacity_ah=remaining_ah,
            remaining_capacity_measured_at=row.capacity_last_ts,
            capacity_fade_pct=(
                100.0 - remaining_ah / rated_ah * 100.0 if remaining_ah is not None else None
            ),
            remaining_energy_kwh=remaining_kwh,
            state_of_certified_energy_pct=(
                remaining_kwh / rated_kwh * 100.0 if remaining_kwh is not None else None
            ),
            state_of_health_pct=soh.value if soh is not None else None,
            state_of_health_measured_at=soh.measured_at if soh is not None else None,
            state_of_health_source=soh.source if soh is not None else None,
            health_records=row.health_records,
            capacity_fade_pct_per_1000_cycles=per_1000.value,
            capacity_fade_pct_per_1000_cycles_low=per_1000.low,
            capacity_fade_pct_per_1000_cycles_high=per_1000.high,
            capacity_fade_pct_per_year=per_year.value,
            capacity_fade_pct_per_year_low=per_year.low,
            capacity_fade_pct_per_year_high=per_year.high,
            capacity_records=row.fit_days_n,
            initial_power_capability_w=None,
            remaining_power_capability_w=None,
            power_fade_pct=None,
            internal_resistance_initial_mohm=row.resistance_first_mohm,
            internal_resistance_current_mohm=row.resistance_end_mohm,
            internal_resistance_measured_at=(
                row.cycles_end_ts if row.resistance_end_mohm is not None else None
            ),
            internal_resistance_increase_pct=resistance_increase_pct(
                row.resistance_first_mohm, row.resistance_end_mohm
            ),
            round_trip_efficiency_pct=None,
            self_discharge_rate_pct_per_month=None,
        ),
        durability=PassportDurability(
            equivalent_full_cycles=cycles.value if cycles is not None else None,
            equivalent_full_cycles_measured_at=cycles.measured_at if cycles is not None else None,
            equivalent_full_cycles_source=cycles.source if cycles is not None else None,
            energy_throughput_kwh=energy,
            energy_throughput_at_registration_kwh=history_kwh,
            energy_discharged_kwh=row.energy_discharged_kwh if sampled else None,
            capacity_throughput_ah=capacity,
            capacity_throughput_at_registration_ah=history_ah,
            throughput_from=throughput_from,
            throughput_to=throughput_to,
            time_above_45c_h=row.seconds_above_45c / 3600.0 if sampled else None,
            time_below_0c_h=row.seconds_below_0c / 3600.0 if sampled else None,
            max_temp_c=row.max_temp_c,
            first_seen_on=row.first_day,
            last_seen_at=row.last_seen_at,
        ),
        negative_events=PassportNegativeEvents(
            quarantines=[
                NegativeEvent(kind="quarantine", at=e.at, note=e.note)
                for e in repo.quarantine_events(session, row.id)
            ],
            swaps_refused_for_health=row.health_rejections,
            deep_discharge_events=None,
            thermal_events=None,
        ),
        quarantine_recommendations=recommendations(session, scope, row.serial),
        not_derivable=[],
    )
    # Listed from the passport itself, so that every null is listed, whatever adds one.
    result.not_derivable = null_fields(result)
    result.not_derivable_reasons = {
        name: reasons.get(name, UNEXPLAINED) for name in result.not_derivable
    }
    return result


def _plus(a: float | None, b: float | None) -> float | None:
    """a + b, where a missing part counts as 0 unless both are missing."""
    if a is None and b is None:
        return None
    return (a or 0.0) + (b or 0.0)
