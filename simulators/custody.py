"""Continuing from the backend's state: put batteries where the backend says they are.

A simulator restarted on the same database rebuilds the same world from its seed, but the
backend's custody has moved on; this brings the simulated world in line before it runs.
"""

from __future__ import annotations

from typing import Any

from simulators.stations import Stations
from simulators.world import World


def adopt_custody(
    world: World,
    stations: Stations,
    locations: dict[str, dict[str, Any]],
    soc_pct: dict[str, float] | None = None,
) -> int:
    """locations maps a serial to the backend's location (kind, station_code, slot_number,
    vin); serials not in it stay where the simulation put them. Returns how many batteries
    moved. Slots holding a battery start charging again."""
    by_serial = {b.serial: b for b in world.batteries}
    vehicles = {v.vin: v for v in world.vehicles}
    slots = {(st.code, sl.number): sl for st in world.stations for sl in st.slots}
    placed: dict[str, tuple[str, str | int]] = {}
    for vehicle in world.vehicles:
        placed[vehicle.battery.serial] = ("vehicle", vehicle.vin)
    for station in world.stations:
        for slot in station.slots:
            if slot.battery is not None:
                placed[slot.battery.serial] = (station.code, slot.number)
    moved = 0
    for serial, location in sorted(locations.items()):
        battery = by_serial.get(serial)
        if battery is None:
            continue
        if soc_pct and serial in soc_pct:
            battery.soc_pct = min(100.0, max(0.0, soc_pct[serial]))
        kind = location.get("kind")
        target: tuple[str, str | int] | None = None
        if kind == "vehicle" and location.get("vin") in vehicles:
            target = ("vehicle", str(location["vin"]))
        elif (
            kind == "slot" and (location.get("station_code"), location.get("slot_number")) in slots
        ):
            target = (str(location["station_code"]), int(location["slot_number"]))
        if target is None or placed.get(serial) == target:
            continue
        # Take the battery out of wherever the simulation has it.
        where = placed.pop(serial, None)
        if where is not None and where[0] != "vehicle":
            source = slots[(where[0], int(where[1]))]
            if source.battery is battery:
                source.battery = None
        if target[0] == "vehicle":
            vehicle = vehicles[str(target[1])]
            vehicle.battery = battery
        else:
            slots[(target[0], int(target[1]))].battery = battery
        placed[serial] = target
        moved += 1
    # A slot now holding a battery the backend has elsewhere is emptied.
    for (code, number), slot in slots.items():
        if slot.battery is not None and placed.get(slot.battery.serial) != (code, number):
            slot.battery = None
    for station in world.stations:
        for slot in station.slots:
            slot.charging = False
            if slot.battery is not None and slot.battery.soc_pct < 100.0:
                stations.start_charge(station, slot)
    for battery in world.batteries:
        world.reported_soh[battery.serial] = round(battery.soh_pct, 1)
    return moved
