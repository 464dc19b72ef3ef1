from datetime import date, datetime

from pydantic import BaseModel, Field

from app.models import BatteryState, ReadingSource

FADE_LOW_DESCRIPTION = (
    "Lower end of the rate's 99.99 % confidence interval (figures.FADE_CONFIDENCE), from the"
    " least-squares fit's standard error (Student's t); null with the rate"
)
FADE_HIGH_DESCRIPTION = "Upper end of the same interval"


class ReportWindow(BaseModel):
    """UTC days, both inclusive."""

    day_from: date
    day_to: date
    oem_code: str | None = Field(description="The OEM reported on; null for the whole fleet")


class BatteryCounts(BaseModel):
    total: int
    in_service: int
    quarantined: int
    retired: int
    by_pack_type: dict[str, int]


class HistogramBin(BaseModel):
    lower_pct: float
    upper_pct: float
    batteries: int


class SohPercentiles(BaseModel):
    """SoH at the end of the window of the batteries whose cycles (or age) fall in the bin."""

    bin_lower: float
    bin_upper: float
    batteries: int
    soh_p10_pct: float
    soh_median_pct: float
    soh_p90_pct: float


class SwapCounts(BaseModel):
    completed: int
    rejected: int
    aborted: int
    rejected_by_reason: dict[str, int]


class QuarantinedBattery(BaseModel):
    serial: str
    pack_type_code: str
    soh_pct: float | None
    quarantined_at: datetime | None
    note: str | None


class Anomaly(BaseModel):
    serial: str
    pack_type_code: str
    kind: str = Field(
        description="fast_fade | running_hot | hot_cell | cell_imbalance | below_soh_floor"
    )
    reason: str
    value: float = Field(description="The battery's figure, in the unit the reason names")
    value_low: float | None = Field(
        default=None,
        description="The figure's confidence interval, where it comes from a fit (a fast"
        " fade's ratio from the fade rate's interval); null otherwise",
    )
    value_high: float | None = Field(default=None)
    evidence: str = Field(default="", description="What the figure rests on")
    cohort_median: float
    robust_z: float | None = Field(
        description="0.6745 (value - median) / MAD within the cohort; null for"
        " below_soh_floor, which is the fleet's rule and needs no cohort"
    )
    cohort_size: int


class FleetSummary(BaseModel):
    window: ReportWindow
    generated_at: datetime
    counts: BatteryCounts
    soh_histogram: list[HistogramBin] = Field(
        description="SoH at the end of the window (latest health record in it), 5 % bins"
    )
    soh_by_cycles: list[SohPercentiles]
    soh_by_age: list[SohPercentiles]
    cycle_bin_width: float
    age_bin_days: int
    batteries_reporting: int = Field(description="Batteries with a health record in the window")
    energy_charged_kwh: float
    swaps: SwapCounts
    quarantined: list[QuarantinedBattery]
    anomalies: list[Anomaly]


class BatteryReportRow(BaseModel):
    serial: str
    pack_type_code: str
    oem_code: str | None
    state: BatteryState
    age_days: int | None = Field(description="At the end of the window; null without a date")
    equivalent_full_cycles: float | None = Field(
        description="Cycle count of the latest health record in the window, else the battery's"
    )
    equivalent_full_cycles_measured_at: datetime | None = Field(
        default=None,
        description="When the BMS reported that count; null when it was given at registration",
    )
    energy_throughput_kwh: float | None = Field(
        description="Energy charged at stations in the window; null when the battery sent no"
        " record in the window"
    )
    energy_discharged_kwh: float | None = Field(
        description="Energy drawn on the road (vehicle data); null as above"
    )
    soh_start_pct: float | None
    soh_start_measured_at: datetime | None = Field(
        default=None, description="The health record soh_start_pct comes from"
    )
    soh_end_pct: float | None
    soh_end_measured_at: datetime | None = Field(
        default=None,
        description="The health record soh_end_pct comes from: a SoH is as old as this",
    )
    health_records: int = Field(default=0, description="BMS health records in the window")
    capacity_records: int
    capacity_fade_pct_per_1000_cycles: float | None = Field(
        description="Least-squares slope of measured capacity against cycles, as % of nominal"
        " capacity lost per 1,000 cycles; null below the minimum of evidence (records, cycle"
        " spread: README, Fade rates), with the reason in not_derivable"
    )
    capacity_fade_pct_per_1000_cycles_low: float | None = Field(description=FADE_LOW_DESCRIPTION)
    capacity_fade_pct_per_1000_cycles_high: float | None = Field(description=FADE_HIGH_DESCRIPTION)
    capacity_fade_pct_per_year: float | None = Field(
        description="The same against time, % of nominal capacity lost per year; null below"
        " the minimum of evidence (records, time spread), with the reason in not_derivable"
    )
    capacity_fade_pct_per_year_low: float | None = Field(description=FADE_LOW_DESCRIPTION)
    capacity_fade_pct_per_year_high: float | None = Field(description=FADE_HIGH_DESCRIPTION)
    internal_resistance_increase_pct: float | None = Field(
        description="Latest resistance in the window against the first ever recorded"
    )
    hours_above_45c: float | None = Field(
        description="From charging and vehicle samples; null when the battery sent no record in"
        " the window"
    )
    hours_below_0c: float | None = Field(description="As hours_above_45c")
    max_temp_c: float | None
    charging_sessions: int
    swaps: int
    last_seen_at: datetime | None
    quarantine_recommended: bool
    not_derivable: dict[str, str] = Field(
        description="The row's fields that are null because the data does not support a"
        " figure, each with the reason"
    )


class Recommendation(BaseModel):
    kind: str
    reason: str
    value: float
    value_low: float | None = None
    value_high: float | None = None
    evidence: str = ""
    cohort_median: float
    robust_z: float | None
    window_from: date
    window_to: date
    detected_at: datetime


class PassportBattery(BaseModel):
    serial: str
    pack_type_code: str
    chemistry: str
    manufactured_on: date | None
    state: BatteryState
    rated_capacity_ah: float = Field(description="Annex XIII 1(a): rated capacity")
    rated_energy_kwh: float = Field(description="Certified usable energy (nominal)")
    nominal_voltage_v: float


class PassportPerformance(BaseModel):
    """Annex XIII part 1 (performance and durability), as far as measured data supports it."""

    remaining_capacity_ah: float | None = Field(description="Latest full-charge measurement")
    remaining_capacity_measured_at: datetime | None
    capacity_fade_pct: float | None = Field(description="100 - remaining / rated capacity")
    remaining_energy_kwh: float | None
    state_of_certified_energy_pct: float | None = Field(
        description="Remaining energy against the rated (certified) energy"
    )
    state_of_health_pct: float | None = Field(
        description="The latest SoH reading: its source and measured-at time say whose and how"
        " old (a figure given at registration has source `registration` and no time)"
    )
    state_of_health_measured_at: datetime | None = Field(
        default=None, description="When that SoH was measured"
    )
    state_of_health_source: ReadingSource | None = Field(
        default=None,
        description="health_record (the BMS), swap (read by the station at a swap) or"
        " registration (given by whoever registered the battery)",
    )
    health_records: int = Field(
        default=0, description="BMS health records received over the battery's life"
    )
    capacity_fade_pct_per_1000_cycles: float | None
    capacity_fade_pct_per_1000_cycles_low: float | None = Field(description=FADE_LOW_DESCRIPTION)
    capacity_fade_pct_per_1000_cycles_high: float | None = Field(description=FADE_HIGH_DESCRIPTION)
    capacity_fade_pct_per_year: float | None
    capacity_fade_pct_per_year_low: float | None = Field(description=FADE_LOW_DESCRIPTION)
    capacity_fade_pct_per_year_high: float | None = Field(description=FADE_HIGH_DESCRIPTION)
    capacity_records: int
    initial_power_capability_w: float | None = Field(
        description="Not derivable: no power-capability tests are recorded"
    )
    remaining_power_capability_w: float | None = Field(
        description="Not derivable: no power-capability tests are recorded"
    )
    power_fade_pct: float | None = Field(description="Not derivable, as above")
    internal_resistance_initial_mohm: float | None
    internal_resistance_current_mohm: float | None
    internal_resistance_measured_at: datetime | None = Field(
        default=None, description="The health record of the current resistance"
    )
    internal_resistance_increase_pct: float | None
    round_trip_efficiency_pct: float | None = Field(
        description="Not derivable: charge and discharge energy are not metered over one cycle"
    )
    self_discharge_rate_pct_per_month: float | None = Field(description="Not derivable")


class PassportDurability(BaseModel):
    """Figures over the period from throughput_from to throughput_to; null where no record
    supports a figure (a battery that sent no telemetry has no throughput, not 0)."""

    equivalent_full_cycles: float | None = Field(
        description="The BMS's latest cycle count, or the count given at registration (see"
        " the source); null when neither exists"
    )
    equivalent_full_cycles_measured_at: datetime | None = Field(
        default=None, description="When the BMS reported it; null for a registration figure"
    )
    equivalent_full_cycles_source: ReadingSource | None = Field(
        default=None, description="health_record or registration"
    )
    energy_throughput_kwh: float | None = Field(
        description="Energy charged, lifetime: the history given at registration (if any) plus"
        " what station charging samples measured since"
    )
    energy_throughput_at_registration_kwh: float | None = Field(
        default=None, description="The part given at registration, for the time before it"
    )
    energy_discharged_kwh: float | None = Field(
        description="Energy drawn on the road, measured by vehicle telemetry (since"
        " registration only)"
    )
    capacity_throughput_ah: float | None = Field(
        description="Ah charged plus Ah discharged, lifetime: the history given at registration"
        " (if any) plus what telemetry measured since"
    )
    capacity_throughput_at_registration_ah: float | None = Field(
        default=None, description="The part given at registration"
    )
    throughput_from: date | None = Field(
        default=None,
        description="First day the throughputs cover: the manufacture date when they include a"
        " history given at registration, else the first day of telemetry",
    )
    throughput_to: datetime | None = Field(
        default=None,
        description="The last telemetry they include, or the registration when they are the"
        " registration's history alone",
    )
    time_above_45c_h: float | None = Field(
        description="From charging and vehicle samples, since registration; null without any"
    )
    time_below_0c_h: float | None = Field(description="As time_above_45c_h")
    max_temp_c: float | None
    first_seen_on: date | None
    last_seen_at: datetime | None


class NegativeEvent(BaseModel):
    kind: str = Field(description="quarantine")
    at: datetime
    note: str | None


class PassportNegativeEvents(BaseModel):
    quarantines: list[NegativeEvent]
    swaps_refused_for_health: int = Field(
        description="Swaps refused because this battery was damaged or below the SoH floor"
    )
    deep_discharge_events: int | None = Field(description="Not derivable: not reported")
    thermal_events: int | None = Field(description="Not derivable: not reported")


class BatteryPassport(BaseModel):
    """Performance and durability attributes of the EU Battery Regulation 2023/1542 battery
    passport (Art. 77, Annex XIII) that this system's data supports. Attributes it cannot
    derive are present and null, and listed in `not_derivable`."""

    regulation: str = "EU 2023/1542 Annex XIII"
    generated_at: datetime
    battery: PassportBattery
    performance: PassportPerformance
    durability: PassportDurability
    negative_events: PassportNegativeEvents
    quarantine_recommendations: list[Recommendation]
    not_derivable: list[str] = Field(
        description="Every field of this passport that is null, as section.field"
    )
    not_derivable_reasons: dict[str, str] = Field(
        default_factory=dict, description="Why each field of not_derivable is null"
    )
