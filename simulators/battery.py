"""A lithium-iron-phosphate battery pack that knows its own true state.

The model is deliberately cheap (a few float operations per step, no numpy) because a fleet
steps thousands of packs through months of simulated time.

Electrical: SoC by coulomb counting against the *true* (faded) capacity; terminal voltage is
the LFP open-circuit voltage plus I*R; charging is CC-CV as a BMS requests it: constant current
up to a taper point near 80 % SoC, then a current falling linearly with the remaining headroom
(what the CV phase looks like from outside), ending at C/20.

Thermal: one lumped thermal mass heated by I^2*R and cooled toward ambient through a fixed
conductance, integrated exactly over a step (so a long idle step is as cheap and as right as
a short one).

Ageing, in two empirical parts that add up (capacity loss as a fraction of the initial capacity):

* Calendar: Naumann, Schimpe, Keil, Hesse, Jossen (2018), "Analysis and modeling of calendar
  aging of a commercial LiFePO4/graphite cell", J. Energy Storage 17, 153-169:
      Q_loss,cal = k_ref * exp(-Ea/R * (1/T - 1/298.15 K)) * (c * (SoC - 0.5)^3 + d) * sqrt(t)
  with k_ref = 1.2571e-5 s^-0.5, Ea = 17126 J/mol, c = 2.8575, d = 0.60225, t in seconds,
  Q_loss as a fraction.
* Cycling: Naumann, Spingler, Jossen (2020), "Analysis and modeling of cycle aging of a
  commercial LiFePO4/graphite cell", J. Power Sources 451, 227666:
      Q_loss,cyc [%] = (a * C_rate + b) * (c * (DOD - 0.6)^3 + d) * sqrt(FEC)
  with a = 0.0630, b = 0.0971, c = 4.0253, d = 1.0923, evaluated per half cycle.
  Those cells were cycled at 25 C only, so the temperature dependence of cycling is taken from
  Wang et al. (2011), "Cycle-life model for graphite-LiFePO4 cells", J. Power Sources 196,
  3942-3948: an Arrhenius factor with Ea = 31700 - 370.3 * C_rate J/mol, normalised to 1 at
  25 C so that Naumann's 25 C figures hold unchanged there.

Both laws are power laws in their "age" variable (sqrt(t), sqrt(FEC)); when the stress changes
we continue them with the usual virtual-age method (the age at which the current loss would
have been reached under the current stress), as in TUM's SimSES.

Pack level: packs are built from identical cells in series and parallel, so relative capacity
loss, SoC, C-rate and FEC are the same at cell and pack level; the cell-level laws above apply
unchanged to the relative loss. Only the absolute figures (Ah, V, ohm) are scaled: Ah by the
parallel count, volts by the series count, resistance by series/parallel. The pack is as good
as its worst cell, which is why a hot cell's temperature, not the pack mean, drives the ageing
of a hot-cell pack.

Resistance: DC resistance grows with capacity loss (R = R0 * (1 + 2 * Q_loss)), a linear
coupling in the range reported for LFP by Naumann 2018/2020 (tens of percent resistance rise by
the time capacity has lost 10-20 %), and falls with temperature (Arrhenius, 15 kJ/mol).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

GAS_CONSTANT = 8.314462618
T_REF_K = 298.15
ZERO_C_K = 273.15

# Naumann et al. 2018, calendar ageing of Sony US26650FTC1 LFP/graphite cells.
CAL_K_REF = 1.2571e-5
CAL_EA = 17126.0
CAL_C = 2.8575
CAL_D = 0.60225

# Naumann et al. 2020, cycle ageing of the same cells at 25 C (loss in percent).
CYC_A = 0.0630
CYC_B = 0.0971
CYC_C = 4.0253
CYC_D = 1.0923

# Wang et al. 2011: Ea = 31700 - 370.3 * C_rate (J/mol).
WANG_EA = 31700.0
WANG_EA_PER_C = 370.3

RESISTANCE_PER_LOSS = 2.0
RESISTANCE_EA = 15000.0

# Folded constants of the hot path; the same values the expressions below compute.
_INV_T_REF = 1.0 / T_REF_K
_CAL_EXP = -CAL_EA / GAS_CONSTANT
_RES_EXP = RESISTANCE_EA / GAS_CONSTANT

CELL_NOMINAL_V = 3.2
CELL_MAX_V = 3.65
TAPER_START_PCT = 80.0
TERMINATION_C = 0.05

# LFP open-circuit voltage at SoC 0, 5, ..., 100 %: steep at both ends, flat between.
_OCV = (
    2.80, 3.10, 3.18, 3.21, 3.24, 3.255, 3.265, 3.275, 3.285, 3.29, 3.295,
    3.30, 3.305, 3.31, 3.32, 3.325, 3.33, 3.335, 3.34, 3.36, 3.45,
)  # fmt: skip


def cell_ocv(soc_pct: float) -> float:
    if soc_pct <= 0.0:
        return _OCV[0]
    if soc_pct >= 100.0:
        return _OCV[20]
    x = soc_pct / 5.0
    i = int(x)
    f = x - i
    return _OCV[i] + (_OCV[i + 1] - _OCV[i]) * f


def calendar_rate(temp_k: float, soc_frac: float) -> float:
    """Naumann 2018's k (fraction per sqrt(second)) at a temperature and SoC."""
    k_t = CAL_K_REF * math.exp(-CAL_EA / GAS_CONSTANT * (1.0 / temp_k - 1.0 / T_REF_K))
    return k_t * (CAL_C * (soc_frac - 0.5) ** 3 + CAL_D)


def cycle_stress(c_rate: float, dod: float, temp_k: float) -> float:
    """Naumann 2020's prefactor of sqrt(FEC), in percent, with Wang 2011's Arrhenius term."""
    base = (CYC_A * c_rate + CYC_B) * (CYC_C * (dod - 0.6) ** 3 + CYC_D)
    ea = WANG_EA - WANG_EA_PER_C * c_rate
    return base * math.exp(-ea / GAS_CONSTANT * (1.0 / temp_k - 1.0 / T_REF_K))


class FaultMode(StrEnum):
    none = "none"
    fast_fade = "fast_fade"
    hot_cell = "hot_cell"
    cell_imbalance = "cell_imbalance"


@dataclass(frozen=True, slots=True)
class PackSpec:
    code: str
    name: str
    cells_series: int
    cells_parallel: int
    cell_capacity_ah: float
    cell_resistance_mohm: float
    max_charge_c: float = 1.0
    # About 1 kJ/(kg K) times the pack mass; the conductance sets a time constant near an hour.
    thermal_mass_j_per_k: float = 12_000.0
    cooling_w_per_k: float = 3.0
    chemistry: str = "LFP"

    @property
    def nominal_voltage_v(self) -> float:
        return self.cells_series * CELL_NOMINAL_V

    @property
    def nominal_capacity_ah(self) -> float:
        return self.cells_parallel * self.cell_capacity_ah

    @property
    def nominal_energy_kwh(self) -> float:
        return self.nominal_voltage_v * self.nominal_capacity_ah / 1000.0

    @property
    def resistance_ohm(self) -> float:
        return self.cell_resistance_mohm / 1000.0 * self.cells_series / self.cells_parallel


# Specific heat of LFP prismatic cells, about 1.0-1.1 kJ/(kg K) in calorimetry studies; the
# pack's housing and cold plates are taken to be the same (an assumption).
PACK_SPECIFIC_HEAT_J_PER_KG_K = 1000.0


def pack_spec(
    code: str,
    name: str,
    *,
    cells_series: int,
    cells_parallel: int,
    cell_capacity_ah: float,
    cell_resistance_mohm: float,
    max_charge_c: float,
    mass_kg: float,
    cooling_time_constant_s: float,
) -> PackSpec:
    """A pack whose thermal mass and cooling scale with it: thermal mass from its mass, and a
    cooling conductance that gives the time constant its cooling system is built for. With a
    cell resistance inversely proportional to the cell's Ah (what datasheets show within one
    cell family), the I^2*R heat per kWh at a C-rate is the same at any size, so a 282 kWh
    pack at 1C warms by as many kelvin as a scooter pack at 1C with the same cooling."""
    thermal_mass = PACK_SPECIFIC_HEAT_J_PER_KG_K * mass_kg
    return PackSpec(
        code=code,
        name=name,
        cells_series=cells_series,
        cells_parallel=cells_parallel,
        cell_capacity_ah=cell_capacity_ah,
        cell_resistance_mohm=cell_resistance_mohm,
        max_charge_c=max_charge_c,
        thermal_mass_j_per_k=thermal_mass,
        cooling_w_per_k=thermal_mass / cooling_time_constant_s,
    )


@dataclass(frozen=True, slots=True)
class BatteryTraits:
    """What makes one pack differ from its siblings; drawn once from a seeded generator."""

    capacity_factor: float = 1.0
    resistance_factor: float = 1.0
    ageing_factor: float = 1.0
    fault: FaultMode = FaultMode.none
    fault_severity: float = 1.0

    @classmethod
    def draw(cls, rng: random.Random, faulty_share: float) -> BatteryTraits:
        fault = FaultMode.none
        severity = 1.0
        if rng.random() < faulty_share:
            fault = rng.choice((FaultMode.fast_fade, FaultMode.hot_cell, FaultMode.cell_imbalance))
            severity = rng.uniform(0.7, 1.3)
        # New packs ship at or slightly above nominal; spreads are typical of production lots.
        return cls(
            capacity_factor=min(1.04, max(0.98, rng.gauss(1.015, 0.01))),
            resistance_factor=max(0.85, rng.gauss(1.0, 0.05)),
            ageing_factor=max(0.6, rng.lognormvariate(0.0, 0.12)),
            fault=fault,
            fault_severity=severity,
        )


@dataclass(frozen=True, slots=True)
class ChargeStep:
    current_a: float
    voltage_v: float
    power_kw: float
    energy_kwh: float
    done: bool


class Battery:
    """One pack. Time is float seconds (any epoch); callers advance it monotonically."""

    __slots__ = (
        "serial", "spec", "traits", "t", "soc_pct", "temp_c", "current_a", "efc",
        "cal_loss", "cyc_loss", "extra_loss", "_initial_ah", "_cal_k_mult",
        "_hc_dir", "_hc_ah", "_hc_soc_start", "_hc_crate_ah", "_hc_tempk_ah",
        "_r0_ohm", "_hot_extra_c", "_imbalance_mv_per_efc", "_imbalance_from_efc", "_rng",
        "_nom_ah", "_series", "_tau_s", "_cooling", "_r_ohm",
    )  # fmt: skip

    def __init__(
        self,
        serial: str,
        spec: PackSpec,
        traits: BatteryTraits,
        *,
        t: float,
        soc_pct: float = 50.0,
        temp_c: float = 25.0,
        seed: int | str = 0,
    ) -> None:
        self.serial = serial
        self.spec = spec
        self.traits = traits
        self.t = t
        self.soc_pct = soc_pct
        self.temp_c = temp_c
        self.current_a = 0.0
        self.efc = 0.0
        self.cal_loss = 0.0
        self.cyc_loss = 0.0
        # Loss no law above explains: the weak cell of an imbalanced pack.
        self.extra_loss = 0.0
        self._initial_ah = spec.nominal_capacity_ah * traits.capacity_factor
        mult = traits.ageing_factor
        if traits.fault is FaultMode.fast_fade:
            mult *= 4.0 * traits.fault_severity
        self._cal_k_mult = mult
        self._hc_dir = 0
        self._hc_ah = 0.0
        self._hc_soc_start = soc_pct
        self._hc_crate_ah = 0.0
        self._hc_tempk_ah = 0.0
        self._r0_ohm = spec.resistance_ohm * traits.resistance_factor
        self._hot_extra_c = 0.0
        if traits.fault is FaultMode.hot_cell:
            # A cell with several times the resistance of its neighbours: its excess heat.
            self._hot_extra_c = 6.0 * traits.fault_severity
        self._imbalance_mv_per_efc = (
            2.0 * traits.fault_severity if traits.fault is FaultMode.cell_imbalance else 0.0
        )
        self._imbalance_from_efc = 0.0
        # Measurement noise only: never feeds back into the true state.
        self._rng = random.Random(f"{seed}:{serial}")
        # Copies of derived figures read on every step.
        self._nom_ah = spec.nominal_capacity_ah
        self._series = spec.cells_series
        self._cooling = spec.cooling_w_per_k
        self._tau_s = spec.thermal_mass_j_per_k / spec.cooling_w_per_k
        self._r_ohm = 0.0
        self._refresh_resistance()

    # ---- true state ------------------------------------------------------------------------

    @property
    def loss_fraction(self) -> float:
        return self.cal_loss + self.cyc_loss + self.extra_loss

    @property
    def capacity_ah(self) -> float:
        return self._initial_ah * max(0.05, 1.0 - self.loss_fraction)

    @property
    def capacity_kwh(self) -> float:
        return self.capacity_ah * self.spec.nominal_voltage_v / 1000.0

    @property
    def soh_pct(self) -> float:
        """True state of health against the nominal (datasheet) capacity, capped at 100."""
        return min(100.0, 100.0 * self.capacity_ah / self.spec.nominal_capacity_ah)

    @property
    def faulty(self) -> bool:
        return self.traits.fault is not FaultMode.none

    def resistance_ohm(self) -> float:
        return self._r_ohm

    def _refresh_resistance(self) -> None:
        temp_k = self.temp_c + ZERO_C_K
        temp_factor = math.exp(RESISTANCE_EA / GAS_CONSTANT * (1.0 / temp_k - 1.0 / T_REF_K))
        self._r_ohm = self._r0_ohm * (1.0 + RESISTANCE_PER_LOSS * self.loss_fraction) * temp_factor

    def resistance_ratio(self) -> float:
        return 1.0 + RESISTANCE_PER_LOSS * self.loss_fraction

    def c_rate(self) -> float:
        return abs(self.current_a) / self._nom_ah

    def temp_c_max(self) -> float:
        c = self.current_a / self._nom_ah
        return self.temp_c + 0.6 + 1.2 * c * c + self._hot_extra_c * (0.3 + c * c)

    def temp_c_min(self) -> float:
        c = self.current_a / self._nom_ah
        return self.temp_c - 0.4 - 0.5 * c * c

    def pack_voltage_v(self) -> float:
        return self._series * cell_ocv(self.soc_pct) + self.current_a * self._r_ohm

    def cell_spread_v(self) -> float:
        return (8.0 + self._imbalance_mv_per_efc * (self.efc - self._imbalance_from_efc)) / 1000.0

    # ---- time evolution --------------------------------------------------------------------

    def advance(self, t: float, current_a: float, ambient_c: float) -> float:
        """Hold `current_a` (positive charges) from self.t to t; returns the Ah moved."""
        # The hottest path of a fleet run: the helpers (capacity_ah, _accumulate_half_cycle,
        # _age_calendar, _refresh_resistance) are inlined here with the same arithmetic, in
        # the same order, so that results match them bit for bit.
        dt = t - self.t
        if dt <= 0.0:
            self.current_a = current_a
            return 0.0
        self.t = t
        self.current_a = current_a
        hot_k = self._hot_extra_c * 0.5
        temp_c = self.temp_c
        soc = self.soc_pct
        cap = self._initial_ah * max(0.05, 1.0 - (self.cal_loss + self.cyc_loss + self.extra_loss))
        ah = current_a * dt / 3600.0
        if ah and cap > 0.0:
            new_soc = soc + 100.0 * ah / cap
            if new_soc > 100.0:
                ah = (100.0 - soc) * cap / 100.0
                new_soc = 100.0
            elif new_soc < 0.0:
                ah = -soc * cap / 100.0
                new_soc = 0.0
            mean_soc = 0.5 * (soc + new_soc)
            direction = 1 if ah > 0.0 else -1
            if direction != self._hc_dir:
                self.close_half_cycle()
                self._hc_dir = direction
            mag = ah if ah > 0.0 else -ah
            self._hc_ah += mag
            self._hc_crate_ah += mag * (mag * 3600.0 / dt) / self._nom_ah
            self._hc_tempk_ah += mag * (temp_c + ZERO_C_K + hot_k)
            self.soc_pct = new_soc
        else:
            mean_soc = soc

        # Lumped thermal model integrated exactly over dt at constant heating power.
        steady = ambient_c + current_a * current_a * self._r_ohm / self._cooling
        new_temp = steady + (temp_c - steady) * math.exp(-dt / self._tau_s)
        self.temp_c = new_temp
        mean_temp_c = 0.5 * (temp_c + new_temp)

        # Calendar ageing (Naumann 2018) continued by virtual time, as in _age_calendar.
        k_t = CAL_K_REF * math.exp(_CAL_EXP * (1.0 / (mean_temp_c + ZERO_C_K + hot_k) - _INV_T_REF))
        k = k_t * (CAL_C * (mean_soc / 100.0 - 0.5) ** 3 + CAL_D) * self._cal_k_mult
        virtual_t = (self.cal_loss / k) ** 2
        cal = k * math.sqrt(virtual_t + dt)
        self.cal_loss = cal

        temp_factor = math.exp(_RES_EXP * (1.0 / (new_temp + ZERO_C_K) - _INV_T_REF))
        loss = cal + self.cyc_loss + self.extra_loss
        self._r_ohm = self._r0_ohm * (1.0 + RESISTANCE_PER_LOSS * loss) * temp_factor
        return ah

    def _ageing_temp_k(self, temp_c: float) -> float:
        # A hot-cell pack ages at its hottest cell's temperature: the weakest cell sets capacity.
        return temp_c + ZERO_C_K + self._hot_extra_c * 0.5

    def _age_calendar(self, dt: float, temp_c: float, soc_pct: float) -> None:
        k = calendar_rate(self._ageing_temp_k(temp_c), soc_pct / 100.0) * self._cal_k_mult
        # Virtual time: the storage time that would give today's loss at today's stress.
        virtual_t = (self.cal_loss / k) ** 2
        self.cal_loss = k * math.sqrt(virtual_t + dt)

    def _accumulate_half_cycle(self, ah: float, dt: float) -> None:
        direction = 1 if ah > 0.0 else -1
        if direction != self._hc_dir:
            self.close_half_cycle()
            self._hc_dir = direction
        mag = abs(ah)
        self._hc_ah += mag
        self._hc_crate_ah += mag * (mag * 3600.0 / dt) / self._nom_ah
        self._hc_tempk_ah += mag * self._ageing_temp_k(self.temp_c)

    def close_half_cycle(self) -> None:
        """Apply the cycle ageing of the charge or discharge that just ended."""
        ah = self._hc_ah
        if ah <= 0.0:
            self._hc_dir = 0
            return
        nominal = self.spec.nominal_capacity_ah
        delta_fec = ah / (2.0 * nominal)
        dod = min(1.0, abs(self.soc_pct - self._hc_soc_start) / 100.0)
        stress = cycle_stress(self._hc_crate_ah / ah, dod, self._hc_tempk_ah / ah)
        stress *= self._cal_k_mult
        loss_pct = self.cyc_loss * 100.0
        virtual_fec = (loss_pct / stress) ** 2
        self.cyc_loss = stress * math.sqrt(virtual_fec + delta_fec) / 100.0
        self.efc += delta_fec
        if self._imbalance_mv_per_efc:
            # The weak cell of a drifting pack hits its cut-off first: usable capacity shrinks.
            self.extra_loss += 0.0004 * self.traits.fault_severity * delta_fec
        self._hc_dir = 0
        self._hc_ah = 0.0
        self._hc_crate_ah = 0.0
        self._hc_tempk_ah = 0.0
        self._hc_soc_start = self.soc_pct
        self._refresh_resistance()

    # ---- charging --------------------------------------------------------------------------

    def taper_start_pct(self) -> float:
        # Higher resistance reaches the CV voltage limit earlier, so aged packs taper sooner.
        return max(60.0, TAPER_START_PCT - 20.0 * (self.resistance_ratio() - 1.0))

    def _cc_cv_current_a(self) -> float:
        soc = self.soc_pct
        if soc >= 100.0:
            return 0.0
        nominal = self._nom_ah
        current = self.spec.max_charge_c * nominal
        # taper_start_pct(), inlined.
        ratio = 1.0 + RESISTANCE_PER_LOSS * (self.cal_loss + self.cyc_loss + self.extra_loss)
        taper = max(60.0, TAPER_START_PCT - 20.0 * (ratio - 1.0))
        if soc > taper:
            current *= (100.0 - soc) / (100.0 - taper)
        # Below the termination current the CV phase is over: the BMS calls the pack full.
        return current if current >= TERMINATION_C * nominal else 0.0

    def charge_complete(self) -> bool:
        return self._cc_cv_current_a() <= 0.0

    def requested_charge_current_a(self) -> float:
        """What the BMS asks the charger for right now (CC-CV with thermal derating)."""
        # _cc_cv_current_a, taper_start_pct and temp_c_max inlined (same arithmetic): every
        # charging slot asks this once a simulated minute.
        soc = self.soc_pct
        if soc >= 100.0:
            return 0.0
        nominal = self._nom_ah
        current = self.spec.max_charge_c * nominal
        ratio = 1.0 + RESISTANCE_PER_LOSS * (self.cal_loss + self.cyc_loss + self.extra_loss)
        taper = max(60.0, TAPER_START_PCT - 20.0 * (ratio - 1.0))
        if soc > taper:
            current *= (100.0 - soc) / (100.0 - taper)
        if current < TERMINATION_C * nominal:
            return 0.0
        c = self.current_a / nominal
        hottest = self.temp_c + 0.6 + 1.2 * c * c + self._hot_extra_c * (0.3 + c * c)
        if hottest > 45.0:
            current *= max(0.0, (55.0 - hottest) / 10.0)
        elif self.temp_c < 0.0:
            current = min(current, 0.2 * self.spec.nominal_capacity_ah)
        return current

    def requested_charge_power_kw(self) -> float:
        current = self.requested_charge_current_a()
        if current <= 0.0:
            return 0.0
        return current * self._voltage_at(current) / 1000.0

    def _voltage_at(self, current_a: float) -> float:
        series = self._series
        volts = cell_ocv(self.soc_pct) + current_a * self._r_ohm / series
        return series * min(CELL_MAX_V, volts)

    def charge(
        self,
        t: float,
        power_limit_kw: float,
        ambient_c: float,
        *,
        requested_a: float | None = None,
        requested_v: float | None = None,
    ) -> ChargeStep:
        """Charge until t with at most power_limit_kw; `done` once the CV phase has ended.

        requested_a, requested_v: requested_charge_current_a() and the voltage at it, if the
        caller has just worked them out (the state has not changed since).
        """
        current = self.requested_charge_current_a() if requested_a is None else requested_a
        if current > 0.0 and power_limit_kw > 0.0:
            limit_w = power_limit_kw * 1000.0
            volts = self._voltage_at(current) if requested_v is None else requested_v
            if current * volts > limit_w:
                # Two fixed-point passes settle I = P / V(I) to well under a percent.
                current = limit_w / volts
                current = limit_w / self._voltage_at(current)
                volts = self._voltage_at(current)
        else:
            current = 0.0
            volts = self.pack_voltage_v()
        ah = self.advance(t, current, ambient_c)
        energy = ah * volts / 1000.0
        done = current > 0.0 and self.charge_complete()
        if done:
            self.soc_pct = 100.0
        return ChargeStep(current, volts, current * volts / 1000.0, energy, done)

    def discharge_power(self, t: float, power_w: float, ambient_c: float) -> float:
        """Draw power_w until t; returns the (negative) current drawn."""
        ocv = self._series * cell_ocv(self.soc_pct)
        if self.soc_pct <= 0.0 or power_w <= 0.0:
            self.advance(t, 0.0, ambient_c)
            return 0.0
        current = power_w / ocv
        current = power_w / max(1.0, ocv - current * self._r_ohm)
        self.advance(t, -current, ambient_c)
        return -current

    def rest(self, t: float, ambient_c: float) -> None:
        self.advance(t, 0.0, ambient_c)

    def preage(self, *, days: float, efc: float, temp_c: float, soc_pct: float) -> None:
        """Give a pack the history it had before the simulation began, by the same laws.

        Assumes steady conditions: storage at temp_c / soc_pct, cycling at 0.5 C and 70 % DOD.
        """
        temp_k = self._ageing_temp_k(temp_c)
        k = calendar_rate(temp_k, soc_pct / 100.0) * self._cal_k_mult
        self.cal_loss = k * math.sqrt(max(0.0, days) * 86400.0)
        stress = cycle_stress(0.5, 0.7, temp_k) * self._cal_k_mult
        self.cyc_loss = stress * math.sqrt(max(0.0, efc)) / 100.0
        self.efc = efc
        # A fault begins with the simulation, so that detection has a before and an after.
        self._imbalance_from_efc = efc
        self._refresh_resistance()

    # ---- what the BMS reports --------------------------------------------------------------

    def measured_capacity_ah(self) -> float:
        """A coulomb-counted full charge: the truth with a fraction of a percent of noise."""
        return self.capacity_ah * (1.0 + self._rng.gauss(0.0, 0.004))

    def bms_soh_pct(self) -> float:
        return min(100.0, max(0.0, self.soh_pct + self._rng.gauss(0.0, 0.5)))

    def measured_resistance_mohm(self) -> float:
        return self.resistance_ohm() * 1000.0 * (1.0 + self._rng.gauss(0.0, 0.02))

    def cell_voltages_v(self) -> tuple[float, float]:
        series = self.spec.cells_series
        mean = self.pack_voltage_v() / series
        spread = self.cell_spread_v() * (1.0 + 0.1 * self._rng.random())
        return mean - 0.5 * spread, mean + 0.5 * spread
