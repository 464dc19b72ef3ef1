"""A small OEM fleet for the readable reports: health and capacity history that spreads over
several cycle and age bins, one fast-fading battery, a pack type with a hostile code, and a
second OEM whose batteries must never show up in the first one's report."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from app.core import clock
from sqlalchemy.orm import Session

from app.models import Battery, BatteryState, KeyRole, Organization, OrgRole, PackType
from devices.contract import RecordKind
from tests.fixtures import factories
from tests.fixtures.report_data import ingest

NOMINAL_AH = 280.0
DAYS = 40
HOSTILE = "<script>alert('x')</script>&\"pt\""


def window_start() -> date:
    return (clock.now() - timedelta(days=DAYS + 2)).date()


def window() -> dict[str, str]:
    start = window_start()
    return {"from": start.isoformat(), "to": (start + timedelta(days=DAYS + 1)).isoformat()}


@dataclass
class ReportFleet:
    oem: Organization
    other_oem: Organization
    pack: PackType
    serials: list[str]
    fast_fader: str
    other_serials: list[str]
    admin_key: str
    oem_key: str
    other_oem_key: str
    operator_key: str


def history(session: Session, station_id: int, serial: str, cycles0: int, fade_ah: float) -> None:
    """A health record and a capacity record every 4 days; cycles grow 2 a day."""
    start = datetime.combine(window_start(), datetime.min.time(), tzinfo=UTC)
    health, capacity = [], []
    for day in range(0, DAYS, 4):
        ts = start + timedelta(days=day, hours=10)
        cycles = cycles0 + 2 * day
        ah = NOMINAL_AH - 2.0 - fade_ah * cycles + (0.3 if day % 8 else -0.3)
        health.append(
            (
                serial,
                ts,
                station_id,
                ah / NOMINAL_AH * 100.0,
                20.0 + 0.01 * day,
                3.30,
                3.305,
                30.0,
                cycles,
            )
        )
        capacity.append(
            (serial, ts + timedelta(seconds=30), station_id, ah * 0.512, ah, "full_charge", 25.0)
        )
    ingest(session, RecordKind.health, health)
    ingest(session, RecordKind.capacity, capacity)


def battery_with_history(
    session: Session,
    pack: PackType,
    owner: Organization,
    oem: Organization,
    station_id: int,
    *,
    cycles0: int,
    fade_ah: float,
    made: date,
    state: BatteryState = BatteryState.in_service,
) -> Battery:
    battery = factories.make_battery(session, pack, owner, oem=oem, state=state)
    battery.manufactured_on = made
    session.flush()
    history(session, station_id, battery.serial, cycles0, fade_ah)
    return battery


def build_report_fleet(session: Session) -> ReportFleet:
    operator = factories.make_org(session)
    oem = factories.make_org(session, OrgRole.oem)
    other_oem = factories.make_org(session, OrgRole.oem)
    pack = factories.make_pack_type(session)
    pack.code = factories.unique(HOSTILE)
    session.flush()
    station = factories.make_station(session, operator)
    batteries = [
        battery_with_history(
            session,
            pack,
            operator,
            oem,
            station.id,
            cycles0=100 + 300 * i,
            fade_ah=0.02 * (1 + 0.02 * i),
            made=date(2023, 1, 1) + timedelta(days=200 * i),
        )
        for i in range(6)
    ]
    fast = battery_with_history(
        session,
        pack,
        operator,
        oem,
        station.id,
        cycles0=700,
        fade_ah=0.09,
        made=date(2024, 3, 1),
    )
    # One of them quarantined: the quarantine table lists it by serial, so a report that
    # leaked across OEMs would show it.
    others = [
        battery_with_history(
            session,
            pack,
            operator,
            other_oem,
            station.id,
            cycles0=400,
            fade_ah=0.02,
            made=date(2024, 6, 1),
            state=state,
        )
        for state in (BatteryState.in_service, BatteryState.quarantined)
    ]
    return ReportFleet(
        oem=oem,
        other_oem=other_oem,
        pack=pack,
        serials=[b.serial for b in batteries] + [fast.serial],
        fast_fader=fast.serial,
        other_serials=[b.serial for b in others],
        admin_key=factories.make_key(session, KeyRole.admin),
        oem_key=factories.make_key(session, KeyRole.oem, oem),
        other_oem_key=factories.make_key(session, KeyRole.oem, other_oem),
        operator_key=factories.make_key(session, KeyRole.operator, operator),
    )
