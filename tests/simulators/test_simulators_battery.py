"""The battery model against the published behaviour of its sources.

Expected figures are computed here from the papers' coefficients, written out again on purpose:
a typo in simulators/battery.py must not be able to agree with itself.
"""

import math
import random

import pytest

from simulators.battery import Battery, BatteryTraits, FaultMode, PackSpec

# A pack whose cooling holds it at ambient, so a test controls the ageing temperature exactly.
ISOTHERMAL = PackSpec(
    code="iso", name="isothermal test pack", cells_series=16, cells_parallel=4,
    cell_capacity_ah=10.0, cell_resistance_mohm=5.0, max_charge_c=1.0,
    thermal_mass_j_per_k=10_000.0, cooling_w_per_k=1.0e6,
)  # fmt: skip
SCOOTER = PackSpec(
    code="scooter", name="scooter pack", cells_series=16, cells_parallel=4,
    cell_capacity_ah=10.0, cell_resistance_mohm=5.0, max_charge_c=1.0,
)  # fmt: skip
NEW = BatteryTraits()


def naumann_2020_cycle_loss_pct(c_rate: float, dod: float, fec: float) -> float:
    """Naumann, Spingler, Jossen 2020, J. Power Sources 451, 227666, at 25 C."""
    return (0.0630 * c_rate + 0.0971) * (4.0253 * (dod - 0.6) ** 3 + 1.0923) * math.sqrt(fec)


def naumann_2018_calendar_loss(temp_c: float, soc: float, seconds: float) -> float:
    """Naumann, Schimpe, Keil, Hesse, Jossen 2018, J. Energy Storage 17, 153-169 (fraction)."""
    k_t = 1.2571e-5 * math.exp(-17126.0 / 8.3145 * (1.0 / (temp_c + 273.15) - 1.0 / 298.15))
    return k_t * (2.8575 * (soc - 0.5) ** 3 + 0.60225) * math.sqrt(seconds)


def cycle_fully(battery: Battery, cycles: int, ambient_c: float, dt: int = 120) -> None:
    """0 -> 100 % CC-CV at 1 C, then 100 -> 0 % at about 1 C, `cycles` times."""
    t = int(battery.t)
    one_c_w = battery.spec.nominal_voltage_v * battery.spec.nominal_capacity_ah
    for _ in range(cycles):
        while True:
            t += dt
            if battery.charge(t, 1000.0, ambient_c).done:
                break
        while battery.soc_pct > 0.0:
            t += dt
            battery.discharge_power(t, one_c_w, ambient_c)
        battery.close_half_cycle()


def test_cycle_fade_at_25c_matches_naumann_2020_after_1000_fec() -> None:
    battery = Battery("b", ISOTHERMAL, NEW, t=0, soc_pct=0.0, temp_c=25.0)
    cycle_fully(battery, 1080, 25.0)

    expected = naumann_2020_cycle_loss_pct(1.0, 1.0, battery.efc)
    assert battery.efc == pytest.approx(1000, rel=0.05)
    # Charge half cycles run a little under 1 C in the taper, hence a few percent of slack.
    assert battery.cyc_loss * 100 == pytest.approx(expected, rel=0.05)
    # The source's figure: about 6.8 % lost to cycling after 1000 FEC at 1C/1C, 100 % DOD.
    assert 6.2 < battery.cyc_loss * 100 < 7.2
    # Calendar ageing runs alongside (the test takes about 100 days): it adds, it does not mask.
    assert 0.5 < battery.cal_loss * 100 < 3.0
    assert battery.soh_pct == pytest.approx(100 - battery.loss_fraction * 100, abs=1e-9)


def test_cycle_fade_is_smaller_for_shallow_cycles_as_in_naumann_2020() -> None:
    deep = Battery("deep", ISOTHERMAL, NEW, t=0, soc_pct=0.0, temp_c=25.0)
    shallow = Battery("shallow", ISOTHERMAL, NEW, t=0, soc_pct=40.0, temp_c=25.0)
    cycle_fully(deep, 100, 25.0)
    t = 0
    one_c_w = ISOTHERMAL.nominal_voltage_v * ISOTHERMAL.nominal_capacity_ah
    while shallow.efc < deep.efc:
        while shallow.soc_pct < 60.0:
            t += 60
            shallow.charge(t, 1000.0, 25.0)
        while shallow.soc_pct > 40.0:
            t += 60
            shallow.discharge_power(t, one_c_w, 25.0)
        shallow.close_half_cycle()

    ratio = shallow.cyc_loss / deep.cyc_loss
    expected = (4.0253 * (0.2 - 0.6) ** 3 + 1.0923) / (4.0253 * 0.4**3 + 1.0923)
    assert ratio == pytest.approx(expected, rel=0.08)


def test_hotter_cycling_fades_faster_by_wang_2011_activation_energy() -> None:
    cool = Battery("cool", ISOTHERMAL, NEW, t=0, soc_pct=0.0, temp_c=25.0)
    hot = Battery("hot", ISOTHERMAL, NEW, t=0, soc_pct=0.0, temp_c=40.0)
    cycle_fully(cool, 150, 25.0)
    cycle_fully(hot, 150, 40.0)

    # Wang et al. 2011: Ea = 31700 - 370.3 * C_rate J/mol, here at about 1 C.
    ea = 31700.0 - 370.3
    arrhenius = math.exp(ea / 8.3145 * (1 / 298.15 - 1 / 313.15))
    assert hot.cyc_loss / cool.cyc_loss == pytest.approx(arrhenius, rel=0.05)
    assert hot.cal_loss > cool.cal_loss
    assert hot.capacity_ah < cool.capacity_ah


def test_calendar_fade_follows_square_root_of_time() -> None:
    battery = Battery("b", ISOTHERMAL, NEW, t=0, soc_pct=50.0, temp_c=25.0)
    losses = {}
    for day in range(1, 361):
        battery.rest(day * 86_400, 25.0)
        if day in (90, 360):
            losses[day] = battery.cal_loss

    assert losses[360] / losses[90] == pytest.approx(2.0, rel=0.005)
    assert losses[360] == pytest.approx(
        naumann_2018_calendar_loss(25.0, 0.5, 360 * 86_400), rel=0.005
    )
    assert battery.cyc_loss == 0.0


@pytest.mark.parametrize(("temp_c", "soc_pct"), [(40.0, 50.0), (25.0, 100.0)])
def test_calendar_fade_is_faster_when_hot_or_full(temp_c: float, soc_pct: float) -> None:
    reference = Battery("ref", ISOTHERMAL, NEW, t=0, soc_pct=50.0, temp_c=25.0)
    stressed = Battery("hot", ISOTHERMAL, NEW, t=0, soc_pct=soc_pct, temp_c=temp_c)
    reference.rest(180 * 86_400, 25.0)
    stressed.rest(180 * 86_400, temp_c)

    expected = naumann_2018_calendar_loss(temp_c, soc_pct / 100, 180 * 86_400)
    assert stressed.cal_loss == pytest.approx(expected, rel=0.005)
    assert stressed.cal_loss > reference.cal_loss * 1.3


def test_charge_holds_constant_current_then_tapers_near_full() -> None:
    battery = Battery("b", SCOOTER, NEW, t=0, soc_pct=10.0, temp_c=25.0)
    samples: list[tuple[float, float, float]] = []
    t = 0
    while True:
        t += 60
        soc_before = battery.soc_pct
        step = battery.charge(t, 100.0, 25.0)
        samples.append((soc_before, step.current_a, step.power_kw))
        if step.done:
            break

    cc = [current for soc, current, _ in samples if soc < 75.0]
    assert max(cc) == pytest.approx(min(cc))
    assert max(cc) == pytest.approx(SCOOTER.max_charge_c * SCOOTER.nominal_capacity_ah)
    power_mid = next(p for soc, _, p in samples if soc >= 50.0)
    power_high = next(p for soc, _, p in samples if soc >= 95.0)
    assert power_high < 0.4 * power_mid
    currents_above_80 = [current for soc, current, _ in samples if soc > 81.0]
    assert currents_above_80 == sorted(currents_above_80, reverse=True)
    assert battery.soc_pct == 100.0
    # The taper stretches the last 20 % over a good share of the charge.
    assert sum(1 for soc, _, _ in samples if soc >= 80.0) > 0.3 * len(samples)


def test_charge_current_respects_the_power_limit() -> None:
    battery = Battery("b", SCOOTER, NEW, t=0, soc_pct=20.0, temp_c=25.0)
    step = battery.charge(60, 0.5, 25.0)
    assert step.power_kw == pytest.approx(0.5, rel=0.01)
    assert step.current_a < SCOOTER.nominal_capacity_ah


def test_charging_heats_the_pack_and_rest_cools_it_toward_ambient() -> None:
    battery = Battery("b", SCOOTER, NEW, t=0, soc_pct=5.0, temp_c=25.0)
    t = 0
    for _ in range(40):
        t += 60
        battery.charge(t, 100.0, 25.0)
    heated = battery.temp_c
    assert heated > 26.0
    battery.rest(t + 6 * 3600, 25.0)
    assert 25.0 <= battery.temp_c < 25.0 + (heated - 25.0) * 0.01


def test_resistance_rises_as_capacity_fades() -> None:
    new = Battery("new", SCOOTER, NEW, t=0, soc_pct=50.0, temp_c=25.0)
    aged = Battery("aged", SCOOTER, NEW, t=0, soc_pct=50.0, temp_c=25.0)
    aged.preage(days=1500, efc=2500, temp_c=25.0, soc_pct=60.0)

    fade = 1.0 - aged.capacity_ah / new.capacity_ah
    assert fade > 0.1
    assert aged.resistance_ohm() / new.resistance_ohm() == pytest.approx(1 + 2 * fade, rel=1e-6)
    # Higher resistance reaches the voltage limit sooner: the taper starts earlier.
    assert aged.taper_start_pct() < new.taper_start_pct()


def test_fast_fade_fault_ages_faster_under_the_same_use() -> None:
    healthy = Battery("h", ISOTHERMAL, NEW, t=0, soc_pct=0.0, temp_c=25.0)
    faulty = Battery(
        "f", ISOTHERMAL, BatteryTraits(fault=FaultMode.fast_fade), t=0, soc_pct=0.0, temp_c=25.0
    )
    cycle_fully(healthy, 50, 25.0)
    cycle_fully(faulty, 50, 25.0)
    assert faulty.loss_fraction > 3.0 * healthy.loss_fraction


def test_imbalance_fault_spreads_cell_voltages_as_it_cycles() -> None:
    traits = BatteryTraits(fault=FaultMode.cell_imbalance)
    battery = Battery("b", ISOTHERMAL, traits, t=0, soc_pct=0.0, temp_c=25.0)
    start = battery.cell_spread_v()
    cycle_fully(battery, 40, 25.0)
    assert battery.cell_spread_v() > start + 0.05
    low, high = battery.cell_voltages_v()
    assert high - low > 0.05


def test_traits_and_measurements_are_deterministic_for_a_seed() -> None:
    def run(seed: int) -> tuple[BatteryTraits, float, float]:
        traits = BatteryTraits.draw(random.Random(seed), faulty_share=0.5)
        battery = Battery("b", SCOOTER, traits, t=0, soc_pct=5.0, seed=seed)
        cycle_fully(battery, 3, 25.0)
        return traits, battery.measured_capacity_ah(), battery.capacity_ah

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_measured_capacity_is_the_truth_within_noise() -> None:
    battery = Battery("b", SCOOTER, NEW, t=0, soc_pct=50.0, seed=3)
    battery.preage(days=300, efc=400, temp_c=27.0, soc_pct=60.0)
    readings = [battery.measured_capacity_ah() for _ in range(200)]
    mean = sum(readings) / len(readings)
    assert mean == pytest.approx(battery.capacity_ah, rel=0.002)
    assert all(abs(r / battery.capacity_ah - 1) < 0.02 for r in readings)
