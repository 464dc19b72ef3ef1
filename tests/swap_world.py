"""A small swap-ready world: one operator's station with charged batteries, and a vehicle."""

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.models import Battery, KeyRole, Organization, OrgRole, PackType, Station, Vehicle
from tests.fixtures.factories import (
    make_battery,
    make_key,
    make_org,
    make_pack_type,
    make_station,
    make_vehicle,
    make_vehicle_model,
    slot_of,
)


@dataclass
class SwapWorld:
    operator: Organization
    oem: Organization
    owner: Organization
    pack: PackType
    station: Station
    vehicle: Vehicle
    depleted: Battery
    operator_key: str
    admin_key: str
    oem_key: str
    charged: list[Battery] = field(default_factory=list)

    def swap_body(self, **overrides: object) -> dict[str, object]:
        body: dict[str, object] = {
            "station_code": self.station.code,
            "vin": self.vehicle.vin,
            "removed_battery_serial": self.depleted.serial,
            "removed_soc_pct": 15.0,
            "removed_soh_pct": 95.0,
        }
        body.update(overrides)
        return body


def build_swap_world(
    session: Session, charged_socs: tuple[float, ...] = (95.0,), slots: int = 6
) -> SwapWorld:
    operator = make_org(session, OrgRole.operator)
    oem = make_org(session, OrgRole.oem)
    owner = make_org(session, OrgRole.owner)
    pack = make_pack_type(session)
    model = make_vehicle_model(session, oem, pack)
    station = make_station(session, operator, slots=slots, target_soc_pct=90.0)
    vehicle = make_vehicle(session, model)
    depleted = make_battery(session, pack, owner, oem=oem, vehicle=vehicle, soc_pct=12.0)
    charged = [
        make_battery(
            session, pack, owner, oem=oem, slot=slot_of(session, station, n + 1), soc_pct=soc
        )
        for n, soc in enumerate(charged_socs)
    ]
    return SwapWorld(
        operator=operator,
        oem=oem,
        owner=owner,
        pack=pack,
        station=station,
        vehicle=vehicle,
        depleted=depleted,
        charged=charged,
        operator_key=make_key(session, KeyRole.operator, operator),
        admin_key=make_key(session, KeyRole.admin),
        oem_key=make_key(session, KeyRole.oem, oem),
    )
