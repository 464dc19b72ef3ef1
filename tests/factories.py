"""Small builders of test data; each call makes fresh rows with unique natural keys."""

import itertools
from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from app.auth.service import create_key
from app.batteries.custody import record_registration
from app.models import (
    Battery,
    BatteryState,
    KeyRole,
    LocationKind,
    Organization,
    OrgRole,
    PackType,
    Slot,
    Station,
    Vehicle,
    VehicleModel,
)

_seq = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_seq):05d}"


def make_org(
    session: Session, role: OrgRole = OrgRole.operator, code: str | None = None
) -> Organization:
    org = Organization(code=code or unique(role.value.upper()), name="Test org", role=role)
    session.add(org)
    session.flush()
    return org


def make_key(session: Session, role: KeyRole, org: Organization | None = None) -> str:
    _, raw = create_key(session, role=role, organization_code=org.code if org else None)
    return raw


def auth(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


def make_pack_type(session: Session, energy_kwh: float = 141.0) -> PackType:
    pack = PackType(
        code=unique("PT"),
        name="Test pack",
        chemistry="LFP",
        nominal_energy_kwh=energy_kwh,
        nominal_capacity_ah=280.0,
        nominal_voltage_v=512.0,
    )
    session.add(pack)
    session.flush()
    return pack


def make_vehicle_model(session: Session, oem: Organization, *packs: PackType) -> VehicleModel:
    model = VehicleModel(oem_id=oem.id, code=unique("VM"), name="Test truck")
    model.pack_types = list(packs)
    session.add(model)
    session.flush()
    return model


def make_station(
    session: Session, operator: Organization, slots: int = 4, target_soc_pct: float = 90.0
) -> Station:
    station = Station(
        operator_id=operator.id,
        code=unique("ST"),
        name="Test station",
        latitude=39.9,
        longitude=116.4,
        timezone="Asia/Shanghai",
        target_soc_pct=target_soc_pct,
    )
    session.add(station)
    session.flush()
    session.add_all(Slot(station_id=station.id, number=n) for n in range(1, slots + 1))
    session.flush()
    return station


def slot_of(session: Session, station: Station, number: int) -> Slot:
    from sqlalchemy import select

    slot = session.scalar(select(Slot).where(Slot.station_id == station.id, Slot.number == number))
    assert slot is not None
    return slot


def make_vehicle(session: Session, model: VehicleModel) -> Vehicle:
    vehicle = Vehicle(vin=unique_vin(), oem_id=model.oem_id, model_id=model.id)
    session.add(vehicle)
    session.flush()
    return vehicle


def make_battery(
    session: Session,
    pack: PackType,
    owner: Organization,
    *,
    oem: Organization | None = None,
    slot: Slot | None = None,
    vehicle: Vehicle | None = None,
    soc_pct: float | None = 95.0,
    soh_pct: float | None = 97.0,
    cycles: float = 10.0,
    state: BatteryState = BatteryState.in_service,
) -> Battery:
    kind = (
        LocationKind.slot if slot else LocationKind.vehicle if vehicle else LocationKind.warehouse
    )
    battery = Battery(
        serial=unique("BAT"),
        pack_type_id=pack.id,
        owner_id=owner.id,
        oem_id=oem.id if oem else None,
        manufactured_on=date(2025, 1, 15),
        state=state,
        location_kind=kind,
        slot_id=slot.id if slot else None,
        vehicle_id=vehicle.id if vehicle else None,
        soc_pct=soc_pct,
        soh_pct=soh_pct,
        equivalent_full_cycles=cycles,
    )
    session.add(battery)
    session.flush()
    record_registration(session, battery)
    return battery


def unique_vin() -> str:
    """A well-formed VIN (17 characters, no I, O or Q), unique within the test run."""
    return unique("LSFAB1234CZ9")


def assert_problem(response: Response, status: int, code: str) -> dict[str, object]:
    """The response is an RFC 9457 problem with this status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


def walk_pages(
    client: TestClient,
    url: str,
    headers: dict[str, str],
    limit: int,
    key: str,
    filters: dict[str, str] | None = None,
) -> list[Any]:
    """Follow next_cursor to the end; returns every item's `key`, checking no page repeats one."""
    seen: list[Any] = []
    cursor: str | None = None
    while True:
        # httpx replaces a query string in `url` with `params`, so filters travel here.
        params: dict[str, str | int] = {**(filters or {}), "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get(url, headers=headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        keys = [item[key] for item in page["items"]]
        assert not set(keys) & set(seen), f"page repeats {set(keys) & set(seen)}"
        seen.extend(keys)
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
