"""The battery model at the scale of the scenarios' packs (simulators/scenarios.py): a 282 kWh
truck pack charges, heats, ages and shows its planted faults as a pack of its size must, and
as the scooter pack the model was first written for does at the same C-rate."""

import pytest

from simulators.battery import Battery, BatteryTraits, FaultMode, PackSpec
from simulators.catalog import PACK_SPECS
from simulators.scenarios import PACKS

NEW = BatteryTraits()
SCOOTER = PACK_SPECS["lfp48-40"]
ALL_PACKS = sorted(PACKS)


def charge_at(battery: Battery, power_kw: float, seconds: int, ambient_c: float = 25.0) -> float:
    """Charge for `seconds` in 30 s steps (the scenarios' sample rate); the last step's kW."""
    t = int(battery.t)
    power = 0.0
    for _ in range(seconds // 30):
        t += 30
        power = battery.charge(t, power_kw, ambient_c).power_kw
    return power


def test_a_282_kwh_pack_charging_at_1c_draws_about_280_kw() -> None:
    spec = PACKS["HT282-LFP"]
    assert spec.nominal_energy_kwh == pytest.approx(281.3, abs=0.1)
    battery = Battery("t", spec, NEW, t=0, soc_pct=20.0, temp_c=25.0)
    power = charge_at(battery, 10_000.0, 600)
    # 560 A into a pack of about 500 V (the LFP plateau plus I*R).
    assert battery.current_a == pytest.approx(560.0, rel=0.01)
    assert 270.0 < power < 300.0


@pytest.mark.parametrize("code", ALL_PACKS)
def test_every_pack_charges_at_its_allowed_c_rate_until_the_taper(code: str) -> None:
    spec = PACKS[code]
    battery = Battery("p", spec, NEW, t=0, soc_pct=10.0, temp_c=25.0)
    charge_at(battery, 100_000.0, 300)
    assert battery.c_rate() == pytest.approx(spec.max_charge_c, rel=0.01)


def steady_rise_k(spec: PackSpec) -> float:
    """The temperature rise a pack settles at charging at 1C (several time constants)."""
    battery = Battery("p", spec, NEW, t=0, soc_pct=0.0, temp_c=25.0)
    t = 0
    current = spec.nominal_capacity_ah
    for _ in range(12):
        t += 3600
        battery.advance(t, current, 25.0)
        battery.soc_pct = 10.0  # hold the operating point: only the heat balance matters here
    return battery.temp_c - 25.0


@pytest.mark.parametrize("code", ALL_PACKS)
def test_packs_heat_at_1c_like_the_scooter_pack_whatever_their_size(code: str) -> None:
    """Heat and cooling scale with the pack: the same C-rate, the same kelvin, within a
    factor of two of the scooter pack (whose cooling is an hour-and-a-bit time constant)."""
    scooter = steady_rise_k(SCOOTER)
    rise = steady_rise_k(PACKS[code])
    assert scooter / 2.0 < rise < scooter * 2.0
    # and the thermal mass is the pack's: a 282 kWh pack holds about 3 MJ/K.
    if code == "HT282-LFP":
        assert PACKS[code].thermal_mass_j_per_k == pytest.approx(3.2e6)


@pytest.mark.parametrize("code", [*ALL_PACKS, "lfp48-40"])
def test_planted_faults_show_at_every_pack_size(code: str) -> None:
    """Each fault moves the figure the reports judge it by, by as much at every scale: a hot
    cell's charging temperature spread, an imbalanced pack's cell voltage spread per cycle,
    a fast-fading pack's capacity loss."""
    spec = PACKS.get(code) or PACK_SPECS[code]
    healthy = Battery("h", spec, NEW, t=0, soc_pct=10.0, temp_c=25.0)
    hot = Battery("c", spec, BatteryTraits(fault=FaultMode.hot_cell), t=0, soc_pct=10.0)
    for battery in (healthy, hot):
        charge_at(battery, 100_000.0, 600)
    spread = {b.serial: b.temp_c_max() - b.temp_c_min() for b in (healthy, hot)}
    assert spread["c"] - spread["h"] > 5.0

    imbalanced = Battery("i", spec, BatteryTraits(fault=FaultMode.cell_imbalance), t=0)
    imbalanced.preage(days=100.0, efc=100.0, temp_c=25.0, soc_pct=60.0)
    before = imbalanced.cell_spread_v()
    imbalanced.efc += 50.0
    assert (imbalanced.cell_spread_v() - before) * 1000.0 == pytest.approx(100.0)

    fast = Battery("f", spec, BatteryTraits(fault=FaultMode.fast_fade), t=0)
    normal = Battery("n", spec, NEW, t=0)
    for battery in (fast, normal):
        battery.preage(days=300.0, efc=300.0, temp_c=25.0, soc_pct=60.0)
    assert fast.loss_fraction == pytest.approx(4.0 * normal.loss_fraction)
