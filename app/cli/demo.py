"""`swapfleet seed-demo`: the demo network, the simulated world `swapfleet up` runs
(simulators.scenarios.demo_config), registered by its natural keys."""

from datetime import date
from functools import cache

import typer

from app.cli.common import require_database
from app.core.config import get_settings
from app.core.db import get_session_factory
from app.local.demo import (
    DemoBattery,
    DemoModel,
    DemoNetwork,
    DemoPack,
    DemoStation,
    DemoVehicle,
    SeedSummary,
    seed_demo,
)
from app.models import OrgRole
from simulators.catalog import BatteryEntry
from simulators.fleet import Fleet
from simulators.scenarios import demo_config
from simulators.sinks import InMemorySink


@cache
def demo_network() -> DemoNetwork:
    """The demo world's manifest as the seed takes it. The world is drawn at the simulator's
    default start, so that every seed gives the same rows (only manufacturing dates depend on
    the start; `up`'s simulator finds the rows by their codes and keeps them)."""
    manifest = Fleet(demo_config(days=0.0), InMemorySink(keep_records=False)).manifest
    owners = [o.code for o in manifest.organizations if o.role == "owner"]

    def battery(entry: BatteryEntry) -> DemoBattery:
        return DemoBattery(
            serial=entry.serial, pack=entry.pack_type_code, soc_pct=entry.soc_pct,
            soh_pct=entry.soh_pct, cycles=entry.equivalent_full_cycles,
            manufactured_on=date.fromisoformat(entry.manufactured_on), oem=entry.oem_code,
        )  # fmt: skip

    stocked: dict[str, dict[int, DemoBattery]] = {s.code: {} for s in manifest.stations}
    in_vehicle: dict[str, DemoBattery] = {}
    for entry in manifest.batteries:
        if entry.station_code is not None and entry.slot_number is not None:
            stocked[entry.station_code][entry.slot_number] = battery(entry)
        elif entry.vin is not None:
            in_vehicle[entry.vin] = battery(entry)
    return DemoNetwork(
        organizations=tuple((o.code, o.name, OrgRole(o.role)) for o in manifest.organizations),
        owner=owners[0],
        packs=tuple(
            DemoPack(
                p.code,
                p.name,
                p.chemistry,
                p.nominal_energy_kwh,
                p.nominal_capacity_ah,
                p.nominal_voltage_v,
            )
            for p in manifest.pack_types
        ),  # fmt: skip
        models=tuple(
            DemoModel(m.code, m.name, m.oem_code, m.pack_type_codes)
            for m in manifest.vehicle_models
        ),
        stations=tuple(
            DemoStation(
                s.code,
                s.name,
                s.operator_code,
                s.latitude,
                s.longitude,
                s.timezone,
                s.slot_count,
                s.target_soc_pct,
                stocked[s.code],
            )
            for s in manifest.stations
        ),  # fmt: skip
        vehicles=tuple(
            DemoVehicle(v.vin, v.model_code, in_vehicle[v.vin]) for v in manifest.vehicles
        ),
    )


def echo_seed_summary(summary: SeedSummary) -> None:
    t = summary.totals
    typer.echo(
        f"demo network: {t['organizations']} organizations, {t['stations']} stations"
        f" ({t['slots']} slots), {t['pack_types']} pack types, {t['vehicle_models']} vehicle"
        f" models, {t['vehicles']} vehicles, {t['batteries']} batteries"
        f" ({t['batteries_in_slots']} in slots, {t['batteries_in_vehicles']} in vehicles)"
    )
    created = ", ".join(f"{n} {what}" for what, n in sorted(summary.created.items()))
    typer.echo(f"created: {created}" if created else "already present: nothing created")


def seed_demo_command() -> None:
    """Create the demo network (operators, stations, OEMs, vehicles, batteries); idempotent."""
    require_database(get_settings())
    with get_session_factory().begin() as session:
        summary = seed_demo(session, demo_network())
    echo_seed_summary(summary)
