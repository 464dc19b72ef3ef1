"""The battery passport: EU 2023/1542 Annex XIII performance and durability, over a battery's
whole life, from the daily aggregates and the registry. Only measured values are given; what the
data cannot support is null and listed in `not_derivable`, never estimated from a model."""

from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.batteries.exceptions import BatteryNotFound
from app.core import clock
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

NOT_DERIVABLE = (
    "performance.initial_power_capability_w",
    "performance.remaining_power_capability_w",
    "performance.power_fade_pct",
    "performance.round_trip_efficiency_pct",
    "performance.self_discharge_rate_pct_per_month",
    "negative_events.deep_discharge_events",
    "negative_events.thermal_events",
)


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
    per_1000, per_year = fade_rates(row)
    rated_ah = float(row.nominal_capacity_ah)
    rated_kwh = float(row.nominal_energy_kwh)
    remaining_ah = row.capacity_last_ah
    remaining_kwh = row.capacity_last_kwh
    # Only measured values are absent-or-real: nothing is filled in from a model.
    not_derivable = list(NOT_DERIVABLE)
    if remaining_ah is None:
        not_derivable += ["performance.remaining_capacity_ah", "performance.capacity_fade_pct"]
    if remaining_kwh is None:
        not_derivable += [
            "performance.remaining_energy_kwh",
            "performance.state_of_certified_energy_pct",
        ]
    fade_reasons = fade_not_derivable(per_1000, per_year, "performance.")
    not_derivable += list(fade_reasons)
    return BatteryPassport(
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
            state_of_health_pct=(row.soh_end_pct if row.soh_end_pct is not None else row.soh_pct),
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
            internal_resistance_increase_pct=resistance_increase_pct(
                row.resistance_first_mohm, row.resistance_end_mohm
            ),
            round_trip_efficiency_pct=None,
            self_discharge_rate_pct_per_month=None,
        ),
        durability=PassportDurability(
            equivalent_full_cycles=row.battery_cycles,
            energy_throughput_kwh=row.energy_charged_kwh,
            energy_discharged_kwh=row.energy_discharged_kwh,
            capacity_throughput_ah=row.capacity_throughput_ah,
            time_above_45c_h=row.seconds_above_45c / 3600.0,
            time_below_0c_h=row.seconds_below_0c / 3600.0,
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
        not_derivable=not_derivable,
        not_derivable_reasons=fade_reasons,
    )
