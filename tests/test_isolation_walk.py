"""No response to an OEM key names another OEM's vehicle or battery, through any route.

Two OEMs share one operator's station, and each one's battery ends up in the other's truck
(the cross-custody case of issue 11). Every GET route of the OpenAPI schema is then requested
with every identifier of the world in its path and identifier filters, and no body may hold a
foreign VIN or serial that the request did not itself carry (a 404 may echo what was asked).
"""

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Battery, KeyRole, Organization, OrgRole, Vehicle
from devices.contract import RecordKind
from tests.fixtures import factories
from tests.fixtures.factories import auth
from tests.fixtures.report_data import ingest

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass
class Tenant:
    org: Organization
    key: dict[str, str]
    vehicle: Vehicle
    batteries: list[Battery]

    def identifiers(self) -> set[str]:
        return {self.vehicle.vin, *(b.serial for b in self.batteries)}


@dataclass
class World:
    tenants: list[Tenant]
    path_values: dict[str, list[str]]


def _swap(
    client: TestClient,
    key: dict[str, str],
    station: str,
    vin: str,
    out: str,
    into: str,
    at: datetime,
) -> str:
    body = {
        "station_code": station,
        "vin": vin,
        "removed_battery_serial": out,
        "installed_battery_serial": into,
        "removed_soc_pct": 15.0,
        "removed_soh_pct": 91.0,
        "installed_soc_pct": 95.0,
        "installed_soh_pct": 96.0,
        "started_at": at.isoformat(),
        "finished_at": (at + timedelta(minutes=4)).isoformat(),
    }
    response = client.post("/v1/swaps", json=body, headers=key)
    assert response.status_code == 201, response.text
    assert response.json()["outcome"] == "completed"
    return str(response.json()["id"])


def _build(client: TestClient, session: Session) -> World:
    operator = factories.make_org(session)
    owner = factories.make_org(session, OrgRole.owner)
    pack = factories.make_pack_type(session)
    station = factories.make_station(session, operator, slots=4)
    tenants = []
    for n in range(2):
        oem = factories.make_org(session, OrgRole.oem)
        model = factories.make_vehicle_model(session, oem, pack)
        vehicle = factories.make_vehicle(session, model)
        in_truck = factories.make_battery(
            session, pack, owner, oem=oem, vehicle=vehicle, soc_pct=15.0
        )
        charged = factories.make_battery(
            session, pack, owner, oem=oem, slot=factories.slot_of(session, station, n + 1)
        )
        key = auth(factories.make_key(session, KeyRole.oem, oem))
        tenants.append(Tenant(oem, key, vehicle, [in_truck, charged]))
    op_key = auth(factories.make_key(session, KeyRole.operator, operator))
    a, b = tenants
    # Each OEM's charged battery goes into the other OEM's truck.
    swap_ids = [
        _swap(client, op_key, station.code, b.vehicle.vin, b.batteries[0].serial,
              a.batteries[1].serial, T0),
        _swap(client, op_key, station.code, a.vehicle.vin, a.batteries[0].serial,
              b.batteries[1].serial, T0 + timedelta(minutes=10)),
    ]  # fmt: skip
    # Telemetry that names the foreign battery: each truck reports the battery it now carries,
    # and every battery has station records.
    ingest(session, RecordKind.vehicle, [
        (b.vehicle.vin, T0 + timedelta(hours=1), a.batteries[1].serial, 80, 1000, 600, -50, 30),
        (a.vehicle.vin, T0 + timedelta(hours=1), b.batteries[1].serial, 80, 1000, 600, -50, 30),
    ])  # fmt: skip
    serials = [bat.serial for t in tenants for bat in t.batteries]
    ingest(session, RecordKind.charging, [
        (s, T0 - timedelta(hours=1), station.id, 1, 50, 600, 100, 60, 20, 30, 5) for s in serials
    ])  # fmt: skip
    ingest(session, RecordKind.health, [
        (s, T0 - timedelta(hours=1), station.id, 95, 1, 3.2, 3.3, 30, 100) for s in serials
    ])  # fmt: skip
    ingest(session, RecordKind.capacity, [
        (s, T0 - timedelta(hours=1), station.id, 130, 270, "full_charge", 25) for s in serials
    ])  # fmt: skip
    path_values = {
        "batteries": serials,
        "vehicles": [t.vehicle.vin for t in tenants],
        "swaps": swap_ids,
        "stations": [station.code],
        "organizations": [operator.code, owner.code, *(t.org.code for t in tenants)],
        "pack-types": [pack.code],
        "vehicle-models": [],
    }
    return World(tenants, path_values)


def _urls(path: str, values: dict[str, list[str]]) -> list[str]:
    """The path with each `{param}` filled by every identifier of the segment before it."""
    parts = path.split("/")
    choices = [
        values.get(parts[i - 1], []) if part.startswith("{") else [part]
        for i, part in enumerate(parts)
    ]
    return ["/".join(combo) for combo in itertools.product(*choices)]


def _query_variants(app: FastAPI, operation: dict[str, Any], world: World) -> list[dict[str, str]]:
    """A one-page window over the test's data, then each identifier filter set to each
    identifier, and each value of each enum parameter."""
    components = app.openapi()["components"]["schemas"]
    params = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
    base: dict[str, str] = {}
    if "limit" in params:
        base["limit"] = "500"
    for name, delta in (("from", timedelta(days=-2)), ("to", timedelta(days=2))):
        if name in params:
            schema = params[name]["schema"]
            formats = {schema.get("format")} | {s.get("format") for s in schema.get("anyOf", [])}
            at = T0 + delta
            base[name] = at.date().isoformat() if "date" in formats else at.isoformat()
    variants = [base]
    identifiers = {
        "vin": world.path_values["vehicles"],
        "battery_serial": world.path_values["batteries"],
        "station_code": world.path_values["stations"],
    }
    for name, options in identifiers.items():
        if name in params:
            variants += [{**base, name: option} for option in options]
    for name, parameter in params.items():
        schema = parameter["schema"]
        refs = [schema, *schema.get("anyOf", [])]
        for ref in refs:
            if "$ref" in ref:
                enum = components[ref["$ref"].split("/")[-1]].get("enum", [])
                variants += [{**base, name: value} for value in enum]
    required = [n for n, p in params.items() if p.get("required")]
    return [v for v in variants if all(n in v for n in required)]


def test_no_route_shows_an_oem_key_another_oems_vehicle_or_battery(
    client: TestClient, session: Session
) -> None:
    world = _build(client, session)
    app: FastAPI = client.app  # type: ignore[assignment]
    requests = 0
    leaks: list[str] = []
    for viewer in world.tenants:
        foreign = set().union(*(t.identifiers() for t in world.tenants if t is not viewer))
        for path, operations in app.openapi()["paths"].items():
            if "get" not in operations:
                continue
            for url in _urls(path, world.path_values):
                for query in _query_variants(app, operations["get"], world):
                    response = client.get(url, params=query, headers=viewer.key)
                    requests += 1
                    assert response.status_code < 500, (url, query, response.text)
                    asked = url + " " + " ".join(query.values())
                    shown = {i for i in foreign if i in response.text and i not in asked}
                    if shown:
                        leaks.append(f"{url} {query}: {sorted(shown)}")
    assert requests > 100
    assert not leaks, "\n".join(leaks)


def test_the_walk_sees_the_cross_custody_it_checks(client: TestClient, session: Session) -> None:
    """The world is what the walk needs: the admin sees each OEM's battery in the other's
    truck, so an empty answer to an OEM is redaction, not missing data."""
    world = _build(client, session)
    a, b = world.tenants
    admin = auth(factories.make_key(session, KeyRole.admin))
    battery = client.get(f"/v1/batteries/{a.batteries[1].serial}", headers=admin).json()
    assert battery["location"] == {
        "kind": "vehicle", "station_code": None, "slot_number": None,
        "vin": b.vehicle.vin, "note": None,
    }  # fmt: skip
    vehicle = client.get(f"/v1/vehicles/{b.vehicle.vin}", headers=admin).json()
    assert vehicle["installed_battery_serial"] == a.batteries[1].serial


def test_an_oem_sees_its_battery_in_a_foreign_truck_as_a_vehicle_without_a_vin(
    client: TestClient, session: Session
) -> None:
    world = _build(client, session)
    a, b = world.tenants
    serial = a.batteries[1].serial
    battery = client.get(f"/v1/batteries/{serial}", headers=a.key).json()
    assert battery["location"]["kind"] == "vehicle"
    assert battery["location"]["vin"] is None
    history = client.get(f"/v1/batteries/{serial}/history", headers=a.key).json()["items"]
    into_truck = [e for e in history if e["to_location"]["kind"] == "vehicle"]
    assert len(into_truck) == 1
    assert into_truck[0]["to_location"]["vin"] is None
    # The other OEM's swap shows its own battery and not ours, nor our battery's readings.
    swaps = client.get("/v1/swaps", headers=b.key).json()["items"]
    into_b = next(s for s in swaps if s["vin"] == b.vehicle.vin)
    assert into_b["removed_battery_serial"] == b.batteries[0].serial
    assert into_b["installed_battery_serial"] is None
    assert into_b["installed_soh_pct"] is None
    assert into_b["installed_soc_pct"] is None
    vehicle = client.get(f"/v1/vehicles/{b.vehicle.vin}", headers=b.key).json()
    assert vehicle["installed_battery_serial"] is None
