"""The OCPP 2.1 gateway end to end: a real `swapfleet api` process (the gateway is its
/ocpp/{station_code} WebSocket route), the `ocpp` package's own v21 ChargePoint as the
station, and the results read back through REST."""

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from ocpp.routing import on
from ocpp.v21 import call, call_result
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from app.core import clock
from app.models import Battery, IdToken, OcppCommand, OcppConnection, OcppSwapRequest
from app.ocpp import service as ocpp_service
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.api_server import ApiServer, running_api
from tests.fixtures.committed import truncate_all
from tests.fixtures.factories import auth, make_battery, slot_of, unique
from tests.fixtures.ocpp_station import (
    OcppStation,
    basic_auth,
    connected_station,
    exchange,
    raw_connection,
    ws_url,
)
from tests.fixtures.swap_world import SwapWorld, build_swap_world


@pytest.fixture(scope="module")
def api(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log = tmp_path_factory.mktemp("ocpp") / "api.log"
    with running_api(TEST_DATABASE_URL, log) as server:
        yield server
    # This module's worlds are committed: gone before the worker's next module.
    truncate_all(engine)


@dataclass
class OcppWorld:
    world: SwapWorld
    password: str
    token: str

    @property
    def code(self) -> str:
        return self.world.station.code


def ocpp_world(engine: Engine, *, charged_soh: float = 97.0) -> OcppWorld:
    """A swap world committed for the server to see (unique codes: no test sees another's)."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        world = build_swap_world(session, charged_socs=(95.0, 96.0, 97.0))
        for battery in world.charged:
            battery.soh_pct = charged_soh
        password = ocpp_service.set_password(session, world.station.code)
        token = unique("RFID").upper()  # idTokens are case-insensitive
        ocpp_service.register_id_token(session, token, world.vehicle.vin)
    return OcppWorld(world, password, token)


def id_token(token: str) -> dict[str, str]:
    return {"id_token": token, "type": "ISO14443"}


def battery(evse_id: int, serial: str, soc: float, soh: float) -> dict[str, Any]:
    return {"evse_id": evse_id, "serial_number": serial, "soc": soc, "soh": soh}


def boot() -> call.BootNotification:
    return call.BootNotification(
        charging_station={"model": "SwapCabinet-8", "vendor_name": "swapfleet-tests"},
        reason="PowerUp",
    )


def http(api: ApiServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, headers=auth(key), timeout=30)


def metric(api: ApiServer, key: str, name: str, **labels: str) -> float:
    text = http(api, key).get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def wait_released(engine: Engine, station_id: int, timeout_s: float = 5.0) -> None:
    """The gateway releases a lease when it has processed the close, a moment after the
    client's close returned; until then a reconnect gets 409 (stations retry with back-off)."""
    deadline = time.monotonic() + timeout_s
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            held = connection.execute(
                select(OcppConnection.station_id).where(OcppConnection.station_id == station_id)
            ).first()
            connection.rollback()
            if held is None:
                return
            time.sleep(0.05)
    raise AssertionError(f"the lease of station {station_id} was not released")


# ---- boot, heartbeat, slots, authorize ----------------------------------------------------


def test_boot_and_heartbeat_set_the_station_online_and_status_notification_the_slot(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    client = http(api, w.world.operator_key)
    assert client.get(f"/v1/stations/{w.code}").json()["online"] is False

    async def run() -> None:
        async with connected_station(api.base_url, w.code, w.password) as station:
            booted = await station.call(boot())
            assert booted.status == "Accepted"
            assert booted.interval == 60
            assert client.get(f"/v1/stations/{w.code}").json()["online"] is True
            beat = await station.call(call.Heartbeat())
            assert datetime.fromisoformat(beat.current_time.replace("Z", "+00:00")).tzinfo
            await station.call(
                call.StatusNotification(
                    timestamp=clock.now().isoformat(),
                    connector_status="Faulted",
                    evse_id=4,
                    connector_id=1,
                )
            )

    asyncio.run(run())
    slots = {s["number"]: s for s in client.get(f"/v1/stations/{w.code}/slots").json()["items"]}
    assert slots[4]["connector_status"] == "Faulted"
    assert slots[4]["connector_status_at"] is not None
    assert slots[3]["connector_status"] is None
    # Closing the connection takes the station offline, once the gateway has processed the
    # close (a moment after the client's close returned).
    deadline = time.monotonic() + 5
    while client.get(f"/v1/stations/{w.code}").json()["online"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(f"/v1/stations/{w.code}").json()["online"] is False


def slot_event(
    event_id: int,
    at: datetime,
    variable: str,
    value: str,
    evse_id: int | None,
    **extra: Any,
) -> dict[str, Any]:
    """One NotifyEvent entry about a component on a slot's EVSE (none: the station's)."""
    component: dict[str, Any] = {"name": "ConnectorPlugRetentionLock"}
    if evse_id is not None:
        component["evse"] = {"id": evse_id}
    return {
        "event_id": event_id,
        "timestamp": at.isoformat(),
        "trigger": "Delta",
        "actual_value": value,
        "event_notification_type": "HardWiredNotification",
        "component": component,
        "variable": {"name": variable},
        **extra,
    }


def test_notify_event_sets_a_slots_availability_and_its_open_problem_until_cleared(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    client = http(api, w.world.operator_key)
    t0 = clock.now().replace(microsecond=0)
    kinds = ("availability", "problem", "ignored")

    def counted() -> dict[str, float]:
        return {
            k: metric(api, w.world.admin_key, "swapfleet_ocpp_events_total", kind=k) for k in kinds
        }

    before = counted()

    def slot(number: int) -> dict[str, Any]:
        slots = client.get(f"/v1/stations/{w.code}/slots").json()["items"]
        return next(s for s in slots if s["number"] == number)

    async def run() -> None:
        async with connected_station(api.base_url, w.code, w.password) as station:

            async def notify(seq_no: int, *entries: dict[str, Any]) -> None:
                event = call.NotifyEvent(
                    generated_at=clock.now().isoformat(), seq_no=seq_no, event_data=list(entries)
                )
                assert await station.call(event) is not None

            await station.call(boot())
            await notify(
                0,
                slot_event(
                    1, t0, "Problem", "true", 3, tech_code="LOCK-E17", tech_info="motor stalled"
                ),
                slot_event(2, t0, "AvailabilityState", "Faulted", 3),
                # Not about a slot's state, or about no slot of this station: acknowledged only.
                slot_event(3, t0, "Problem", "true", None, tech_code="FAN-1"),
                slot_event(4, t0, "Problem", "true", 99),
                slot_event(5, t0, "Temperature", "41.5", 2),
            )
            after = counted()
            assert {k: after[k] - before[k] for k in kinds} == {
                "availability": 1,
                "problem": 1,
                "ignored": 3,
            }
            raised = slot(3)
            assert raised["connector_status"] == "Faulted"
            assert raised["fault"]["code"] == "LOCK-E17"
            assert raised["fault"]["info"] == "motor stalled"
            assert datetime.fromisoformat(raised["fault"]["reported_at"]) == t0
            assert slot(2)["fault"] is None
            # A clearing generated before the problem was raised (delivered late) changes
            # nothing; one generated after it clears the problem.
            earlier = t0 - timedelta(minutes=5)
            await notify(1, slot_event(6, earlier, "Problem", "false", 3, cleared=True))
            assert slot(3)["fault"]["code"] == "LOCK-E17"
            later = t0 + timedelta(seconds=1)
            await notify(
                2,
                slot_event(7, later, "Problem", "false", 3, cleared=True),
                slot_event(8, later, "AvailabilityState", "Available", 3),
            )
            cleared = slot(3)
            assert cleared["fault"] is None
            assert cleared["connector_status"] == "Available"

    asyncio.run(run())


def test_authorize_accepts_a_mapped_token_whatever_its_case_and_not_an_unknown_one(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)

    async def run() -> None:
        async with connected_station(api.base_url, w.code, w.password) as station:
            await station.call(boot())
            known = await station.call(call.Authorize(id_token=id_token(w.token.lower())))
            assert known.id_token_info["status"] == "Accepted"
            unknown = await station.call(call.Authorize(id_token=id_token("NOBODY-123")))
            assert unknown.id_token_info["status"] == "Unknown"

    asyncio.run(run())


# ---- swaps ----------------------------------------------------------------------------------


def swap_events(w: OcppWorld, request_id: int, out: dict[str, Any] | None) -> list[Any]:
    """BatteryIn of the world's depleted battery into slot 5, then BatteryOut of `out`, or
    BatteryOutTimeout when out is None."""
    depleted = w.world.depleted.serial
    events = [
        call.BatterySwap(
            battery_data=[battery(5, depleted, 14.0, 93.0)],
            event_type="BatteryIn",
            id_token=id_token(w.token),
            request_id=request_id,
        )
    ]
    if out is None:
        events.append(
            call.BatterySwap(
                battery_data=[battery(1, w.world.charged[0].serial, 95.0, 97.0)],
                event_type="BatteryOutTimeout",
                id_token=id_token(w.token),
                request_id=request_id,
            )
        )
    else:
        events.append(
            call.BatterySwap(
                battery_data=[out],
                event_type="BatteryOut",
                id_token=id_token(w.token),
                request_id=request_id,
            )
        )
    return events


def run_swap(api: ApiServer, w: OcppWorld, events: list[Any], resend_out: bool = False) -> None:
    async def run() -> None:
        async with connected_station(api.base_url, w.code, w.password) as station:
            await station.call(boot())
            for event in events:
                assert await station.battery_swap(event) is not None
            if resend_out:  # the station missed our answer and sends BatteryOut again
                assert await station.battery_swap(events[-1]) is not None

    asyncio.run(run())


def test_battery_in_and_out_become_one_completed_swap_with_custody_and_history(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    charged = w.world.charged[0].serial
    run_swap(api, w, swap_events(w, 7001, battery(1, charged, 95.0, 97.0)), resend_out=True)

    client = http(api, w.world.operator_key)
    swaps = client.get("/v1/swaps", params={"station_code": w.code}).json()["items"]
    assert len(swaps) == 1  # the resent BatteryOut recorded nothing more
    swap = swaps[0]
    assert swap["outcome"] == "completed"
    assert swap["vin"] == w.world.vehicle.vin
    assert swap["removed_battery_serial"] == w.world.depleted.serial
    assert swap["installed_battery_serial"] == charged
    assert swap["removed_soc_pct"] == 14.0
    # Where the station says the batteries are: the depleted one in slot 5, where it went in.
    depleted = client.get(f"/v1/batteries/{w.world.depleted.serial}").json()
    assert depleted["location"]["kind"] == "slot"
    assert depleted["location"]["slot_number"] == 5
    handed_out = client.get(f"/v1/batteries/{charged}").json()
    assert handed_out["location"] == {
        "kind": "vehicle",
        "station_code": None,
        "slot_number": None,
        "vin": w.world.vehicle.vin,
        "note": None,
    }
    assert swap["removed_to_slot_number"] == 5
    history = client.get(f"/v1/batteries/{charged}/history").json()["items"]
    assert history[-1]["cause"] == "swap"
    assert history[-1]["swap_id"] == swap["id"]
    # One move per battery: the depleted one went from the vehicle straight into slot 5, not
    # through slot 1, which the charged one left (the swap takes the station's slot).
    moves = client.get(f"/v1/batteries/{w.world.depleted.serial}/history").json()["items"]
    swap_moves = [m for m in moves if m["swap_id"] == swap["id"]]
    assert [(m["from_location"]["kind"], m["to_location"]["slot_number"]) for m in swap_moves] == [
        ("vehicle", 5)
    ]
    exceptions = client.get("/v1/custody-exceptions", params={"station_code": w.code}).json()
    assert exceptions["items"] == []


def test_battery_out_timeout_ends_the_swap_as_aborted_with_the_battery_in_its_slot(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    run_swap(api, w, swap_events(w, 7002, None))

    client = http(api, w.world.operator_key)
    (swap,) = client.get("/v1/swaps", params={"station_code": w.code}).json()["items"]
    assert swap["outcome"] == "aborted"
    assert swap["reason_code"] == "BatteryOutTimeout"
    depleted = client.get(f"/v1/batteries/{w.world.depleted.serial}").json()
    assert (depleted["location"]["kind"], depleted["location"]["slot_number"]) == ("slot", 5)
    still_there = client.get(f"/v1/batteries/{w.world.charged[0].serial}").json()
    assert (still_there["location"]["kind"], still_there["location"]["slot_number"]) == ("slot", 1)


def test_a_physical_swap_below_the_soh_floor_is_recorded_as_it_happened_and_flagged(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine, charged_soh=50.0)  # below the 70 % floor
    charged = w.world.charged[0].serial
    run_swap(api, w, swap_events(w, 7003, battery(1, charged, 95.0, 50.0)))

    client = http(api, w.world.operator_key)
    (swap,) = client.get("/v1/swaps", params={"station_code": w.code}).json()["items"]
    # The rules' verdict, as POST /v1/swaps would give it...
    assert swap["outcome"] == "rejected"
    assert swap["reason_code"] == "BatterySoHLow"
    # ...and custody as the station reports it: the battery is in the vehicle.
    handed_out = client.get(f"/v1/batteries/{charged}").json()
    assert handed_out["location"]["vin"] == w.world.vehicle.vin
    depleted = client.get(f"/v1/batteries/{w.world.depleted.serial}").json()
    assert (depleted["location"]["kind"], depleted["location"]["slot_number"]) == ("slot", 5)
    (flag,) = client.get("/v1/custody-exceptions", params={"station_code": w.code}).json()["items"]
    assert flag["reason_code"] == "BatterySoHLow"
    assert flag["swap_id"] == swap["id"]
    assert flag["request_id"] == 7003
    assert "SoH" in flag["detail"]
    # Another operator does not see it.
    other = ocpp_world(engine)
    other_view = http(api, other.world.operator_key).get(
        "/v1/custody-exceptions", params={"station_code": w.code}
    )
    assert other_view.json()["items"] == []


def battery_in_slot(engine: Engine, w: OcppWorld, number: int) -> Battery:
    """Another battery of the world's pack type, committed in the station's slot `number`."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        station = session.merge(w.world.station)
        return make_battery(
            session,
            w.world.pack,
            w.world.owner,
            oem=w.world.oem,
            slot=slot_of(session, station, number),
        )


def test_the_station_putting_a_battery_in_a_slot_the_records_hold_occupied_is_flagged(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    stray = battery_in_slot(engine, w, 5)
    charged = w.world.charged[0].serial
    run_swap(api, w, swap_events(w, 7004, battery(1, charged, 95.0, 97.0)))

    client = http(api, w.world.operator_key)
    (swap,) = client.get("/v1/swaps", params={"station_code": w.code}).json()["items"]
    assert swap["outcome"] == "completed"
    (flag,) = client.get("/v1/custody-exceptions", params={"station_code": w.code}).json()["items"]
    assert flag["reason_code"] == "SlotOccupied"
    assert flag["battery_serial"] == stray.serial
    assert client.get(f"/v1/batteries/{stray.serial}").json()["location"]["kind"] == "in_transit"


def test_the_station_handing_a_battery_to_a_vehicle_the_records_hold_another_in_is_flagged(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    # A battery the records hold in slot 5, which the station says came out of the vehicle
    # into slot 5: where it came in, the records already agree; where it went out not.
    stray = battery_in_slot(engine, w, 5)
    charged = w.world.charged[0].serial
    events = [
        call.BatterySwap(
            battery_data=[battery(5, stray.serial, 14.0, 93.0)],
            event_type="BatteryIn",
            id_token=id_token(w.token),
            request_id=7006,
        ),
        call.BatterySwap(
            battery_data=[battery(1, charged, 95.0, 97.0)],
            event_type="BatteryOut",
            id_token=id_token(w.token),
            request_id=7006,
        ),
    ]
    run_swap(api, w, events)

    client = http(api, w.world.operator_key)
    (swap,) = client.get("/v1/swaps", params={"station_code": w.code}).json()["items"]
    assert (swap["outcome"], swap["reason_code"]) == ("rejected", "BatteryMismatch")
    flags = client.get("/v1/custody-exceptions", params={"station_code": w.code}).json()["items"]
    assert sorted(f["reason_code"] for f in flags) == ["BatteryMismatch", "VehicleOccupied"]
    # Custody as the station reports it; the battery the records held in the vehicle is in
    # transit, named by its exception.
    assert client.get(f"/v1/batteries/{charged}").json()["location"]["vin"] == w.world.vehicle.vin
    came_in = client.get(f"/v1/batteries/{stray.serial}").json()["location"]
    assert (came_in["kind"], came_in["slot_number"]) == ("slot", 5)
    (occupied,) = [f for f in flags if f["reason_code"] == "VehicleOccupied"]
    assert occupied["battery_serial"] == w.world.depleted.serial
    depleted = client.get(f"/v1/batteries/{w.world.depleted.serial}").json()["location"]
    assert depleted["kind"] == "in_transit"


# ---- refusals ----------------------------------------------------------------------------------


async def handshake_status(url: str, headers: dict[str, str]) -> int:
    try:
        async with websockets.connect(url, subprotocols=["ocpp2.1"], additional_headers=headers):  # type: ignore[list-item]
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


def test_unknown_station_wrong_password_other_url_and_second_connection_are_refused_and_counted(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    other = ocpp_world(engine)
    admin = w.world.admin_key
    before = {
        reason: metric(api, admin, "swapfleet_ocpp_connections_refused_total", reason=reason)
        for reason in ("unknown_station", "wrong_password", "other_station", "already_connected")
    }

    async def run() -> None:
        unknown = unique("NOSUCH")
        assert (
            await handshake_status(ws_url(api.base_url, unknown), basic_auth(unknown, "x" * 32))
            == 401
        )
        assert (
            await handshake_status(ws_url(api.base_url, w.code), basic_auth(w.code, "wrong" * 6))
            == 401
        )
        assert await handshake_status(ws_url(api.base_url, w.code), {}) == 401
        # The other station's own, valid credentials on this station's URL.
        assert (
            await handshake_status(
                ws_url(api.base_url, w.code), basic_auth(other.code, other.password)
            )
            == 403
        )
        async with connected_station(api.base_url, w.code, w.password) as station:
            await station.call(boot())
            assert (
                await handshake_status(ws_url(api.base_url, w.code), basic_auth(w.code, w.password))
                == 409
            )
            # The first connection is unharmed.
            assert (await station.call(call.Heartbeat())).current_time
        # Once it has closed, the station may connect again.
        wait_released(engine, w.world.station.id)
        async with connected_station(api.base_url, w.code, w.password) as station:
            assert (await station.call(boot())).status == "Accepted"

    asyncio.run(run())
    for reason, count in before.items():
        after = metric(api, admin, "swapfleet_ocpp_connections_refused_total", reason=reason)
        assert after == count + 1, reason


def test_bad_messages_get_the_standard_callerrors_and_the_connection_goes_on(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    admin = w.world.admin_key
    codes = ("NotImplemented", "NotSupported", "RpcFrameworkError")
    before = {c: metric(api, admin, "swapfleet_ocpp_callerrors_total", code=c) for c in codes}

    async def run() -> None:
        async with raw_connection(api.base_url, w.code, w.password) as ws:
            heartbeat = orjson.dumps([2, "hb-1", "Heartbeat", {}])
            assert (await exchange(ws, heartbeat))[0] == 3

            malformed = await exchange(ws, '[2, "m-1", "Heartbeat", {')
            assert malformed[0] == 4
            assert malformed[1] == "-1"
            assert malformed[2] == "RpcFrameworkError"

            not_an_action = await exchange(ws, orjson.dumps([2, "u-1", "MakeCoffee", {}]))
            assert not_an_action[:3] == [4, "u-1", "NotImplemented"]

            not_handled = await exchange(
                ws, orjson.dumps([2, "d-1", "DataTransfer", {"vendorId": "acme"}])
            )
            assert not_handled[:3] == [4, "d-1", "NotSupported"]

            invalid = await exchange(
                ws, orjson.dumps([2, "b-1", "BootNotification", {"reason": "PowerUp"}])
            )
            assert invalid[:3] == [4, "b-1", "OccurrenceConstraintViolation"]

            wrong_type = await exchange(
                ws,
                orjson.dumps(
                    [
                        2,
                        "s-1",
                        "StatusNotification",
                        {
                            "timestamp": "2026-12-07T10:00:00Z",
                            "connectorStatus": "Available",
                            "evseId": "one",
                            "connectorId": 1,
                        },
                    ]
                ),
            )
            assert wrong_type[:3] == [4, "s-1", "TypeConstraintViolation"]

            oversized = await exchange(
                ws,
                orjson.dumps([2, "big-1", "Heartbeat", {"customData": {"vendorId": "x" * 70_000}}]),
            )
            assert oversized[0] == 4
            assert oversized[2] == "FormatViolation"

            never_in = await exchange(
                ws,
                orjson.dumps(
                    [
                        2,
                        "o-1",
                        "BatterySwap",
                        {
                            "eventType": "BatteryOut",
                            "requestId": 999_001,
                            "idToken": {"idToken": w.token, "type": "ISO14443"},
                            "batteryData": [
                                {
                                    "evseId": 1,
                                    "serialNumber": w.world.charged[0].serial,
                                    "soC": 95.0,
                                    "soH": 97.0,
                                }
                            ],
                        },
                    ]
                ),
            )
            assert never_in[:3] == [4, "o-1", "PropertyConstraintViolation"]
            assert "BatteryIn" in never_in[3]

            # After all that, the same connection still answers.
            assert (await exchange(ws, orjson.dumps([2, "hb-2", "Heartbeat", {}])))[:2] == [
                3,
                "hb-2",
            ]

    asyncio.run(run())
    for code, count in before.items():
        assert metric(api, admin, "swapfleet_ocpp_callerrors_total", code=code) == count + 1, code
    client = http(api, w.world.operator_key)
    assert client.get("/v1/swaps", params={"station_code": w.code}).json()["items"] == []
    charged = client.get(f"/v1/batteries/{w.world.charged[0].serial}").json()
    assert charged["location"]["slot_number"] == 1


def test_devices_provision_ocpp_prints_a_password_the_gateway_accepts(
    engine: Engine, api: ApiServer, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    w = ocpp_world(engine)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "devices", "provision", "--station", w.code, "--ocpp"],
        env={**os.environ, "SWAPFLEET_DATABASE_URL": TEST_DATABASE_URL},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    password = re.search(r"^password: (\S+)$", result.stdout, re.M)
    assert password is not None
    assert password.group(1) != w.password

    async def run() -> None:
        # The old password is replaced, the new one works.
        assert (
            await handshake_status(ws_url(api.base_url, w.code), basic_auth(w.code, w.password))
            == 401
        )
        async with connected_station(api.base_url, w.code, password.group(1)) as station:
            assert (await station.call(boot())).status == "Accepted"

    asyncio.run(run())


def test_a_second_gateway_instance_refuses_a_station_another_instance_holds(
    engine: Engine, api: ApiServer, tmp_path: Path
) -> None:
    w = ocpp_world(engine)
    with running_api(TEST_DATABASE_URL, tmp_path / "second.log") as second:

        async def run() -> None:
            async with connected_station(api.base_url, w.code, w.password) as station:
                await station.call(boot())
                assert (
                    await handshake_status(
                        ws_url(second.base_url, w.code), basic_auth(w.code, w.password)
                    )
                    == 409
                )
            # Released when the first connection closed: the second instance takes it.
            wait_released(engine, w.world.station.id)
            async with connected_station(second.base_url, w.code, w.password) as station:
                assert (await station.call(boot())).status == "Accepted"

        asyncio.run(run())


def test_production_refuses_plain_ws_and_accepts_tls_ended_at_a_trusted_proxy(
    engine: Engine, tmp_path: Path
) -> None:
    w = ocpp_world(engine)
    env = {"SWAPFLEET_ENVIRONMENT": "production", "SWAPFLEET_CLOCK_OFFSET_S": "0"}
    with running_api(TEST_DATABASE_URL, tmp_path / "prod.log", env=env) as prod:

        async def run() -> None:
            url = ws_url(prod.base_url, w.code)
            assert await handshake_status(url, basic_auth(w.code, w.password)) == 403
            # A TLS-terminating proxy on this host (uvicorn trusts 127.0.0.1) says it was wss.
            proxied = {**basic_auth(w.code, w.password), "X-Forwarded-Proto": "https"}
            assert await handshake_status(url, proxied) == 101

        asyncio.run(run())


# ---- RequestBatterySwap --------------------------------------------------------------------


class AnsweringStation(OcppStation):
    """Accepts a RequestBatterySwap unless its idToken is `refuse-me`."""

    received: list[tuple[int, str]]

    @on("RequestBatterySwap")  # type: ignore[untyped-decorator]
    def on_request_battery_swap(
        self, request_id: int, id_token: dict[str, Any], **_: Any
    ) -> call_result.RequestBatterySwap:
        self.received.append((request_id, id_token["id_token"]))
        if id_token["id_token"] == "refuse-me":
            return call_result.RequestBatterySwap(
                status="Rejected", status_info={"reason_code": "NoBatteryAvailable"}
            )
        return call_result.RequestBatterySwap(status="Accepted")


def wait_for_state(client: httpx.Client, url: str, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(url).json()
        if body["state"] not in ("pending", "sent"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"{url} stayed {body['state']}")


def test_a_swap_request_posted_to_another_instance_reaches_the_station_and_links_its_swap(
    engine: Engine, api: ApiServer, tmp_path: Path
) -> None:
    w = ocpp_world(engine)
    AnsweringStation.received = []
    with running_api(TEST_DATABASE_URL, tmp_path / "second.log") as second:
        rest = http(second, w.world.operator_key)  # not the instance the station is on

        async def run() -> None:
            async with connected_station(
                api.base_url, w.code, w.password, station_class=AnsweringStation
            ) as station:
                await station.call(boot())
                posted = await asyncio.to_thread(
                    rest.post,
                    f"/v1/stations/{w.code}/swap-requests",
                    json={"vin": w.world.vehicle.vin},
                )
                assert posted.status_code == 202, posted.text
                request_id = posted.json()["request_id"]
                url = f"/v1/stations/{w.code}/swap-requests/{request_id}"
                answered = await asyncio.to_thread(wait_for_state, rest, url)
                assert answered["state"] == "accepted"
                assert AnsweringStation.received == [(request_id, w.token.lower())]
                # The station swaps for that request: the events carry its requestId.
                for event in swap_events(
                    w, request_id, battery(1, w.world.charged[0].serial, 95.0, 97.0)
                ):
                    assert await station.battery_swap(event) is not None

        asyncio.run(run())
        swap_id = rest.get(
            f"/v1/stations/{w.code}/swap-requests/{AnsweringStation.received[0][0]}"
        ).json()["swap_id"]
    (swap,) = (
        http(api, w.world.operator_key)
        .get("/v1/swaps", params={"station_code": w.code})
        .json()["items"]
    )
    assert swap["outcome"] == "completed"
    assert swap_id == swap["id"]


def test_a_swap_request_for_a_station_not_connected_waits_and_is_sent_when_it_connects(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    AnsweringStation.received = []
    rest = http(api, w.world.operator_key)
    with Session(engine) as session, session.begin():
        ocpp_service.register_id_token(session, "refuse-me", w.world.vehicle.vin)
        # The vehicle's first token is the one sent: make it this one.
        session.execute(
            update(IdToken)
            .where(IdToken.id_token == w.token.lower())
            .values(created_at=datetime(2030, 1, 1, tzinfo=UTC))
        )
    posted = rest.post(f"/v1/stations/{w.code}/swap-requests", json={"vin": w.world.vehicle.vin})
    assert posted.status_code == 202
    url = f"/v1/stations/{w.code}/swap-requests/{posted.json()['request_id']}"
    time.sleep(0.5)
    assert rest.get(url).json()["state"] == "pending"

    async def run() -> None:
        async with connected_station(
            api.base_url, w.code, w.password, station_class=AnsweringStation
        ):
            answered = await asyncio.to_thread(wait_for_state, rest, url)
            assert answered["state"] == "rejected"
            assert answered["status_info"] == "NoBatteryAvailable"

    asyncio.run(run())


def test_swap_requests_are_refused_for_unknown_vehicles_tokenless_vehicles_and_others_stations(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    other = ocpp_world(engine)
    rest = http(api, w.world.operator_key)
    url = f"/v1/stations/{w.code}/swap-requests"
    unknown = rest.post(url, json={"vin": "LFWZZ000000000000"})
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "VehicleNotFound"
    with Session(engine) as session, session.begin():
        session.execute(delete(IdToken).where(IdToken.id_token == w.token.lower()))
    tokenless = rest.post(url, json={"vin": w.world.vehicle.vin})
    assert tokenless.status_code == 422
    assert tokenless.json()["code"] == "VehicleHasNoIdToken"
    foreign = rest.post(
        f"/v1/stations/{other.code}/swap-requests", json={"vin": other.world.vehicle.vin}
    )
    assert foreign.status_code == 404
    oem = http(api, w.world.oem_key).post(url, json={"vin": w.world.vehicle.vin})
    assert oem.status_code == 403


def test_a_token_mapped_through_rest_authorizes_and_a_swap_for_an_unknown_token_is_flagged(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    rest = http(api, w.world.operator_key)
    card = unique("card").upper()
    mapped = rest.put(f"/v1/id-tokens/{card}", json={"vin": w.world.vehicle.vin})
    assert mapped.status_code == 200, mapped.text
    assert mapped.json() == {"id_token": card.lower(), "vin": w.world.vehicle.vin}
    assert rest.put("/v1/id-tokens/x", json={"vin": "LFWZZ000000000000"}).status_code == 404
    charged = w.world.charged[0].serial

    async def run() -> None:
        async with connected_station(api.base_url, w.code, w.password) as station:
            await station.call(boot())
            known = await station.call(call.Authorize(id_token=id_token(card)))
            assert known.id_token_info["status"] == "Accepted"
            # A swap for a token nobody mapped: no swap row can name a vehicle.
            stranger = id_token("STRANGER-1")
            for event_type, data in (
                ("BatteryIn", battery(5, w.world.depleted.serial, 14.0, 93.0)),
                ("BatteryOut", battery(1, charged, 95.0, 97.0)),
            ):
                event = call.BatterySwap(
                    battery_data=[data], event_type=event_type, id_token=stranger, request_id=7005
                )
                assert await station.battery_swap(event) is not None

    asyncio.run(run())
    assert rest.get("/v1/swaps", params={"station_code": w.code}).json()["items"] == []
    (flag,) = rest.get("/v1/custody-exceptions", params={"station_code": w.code}).json()["items"]
    assert flag["reason_code"] == "IdTokenUnknown"
    assert flag["swap_id"] is None
    assert rest.get(f"/v1/batteries/{charged}").json()["location"]["kind"] == "in_transit"
    depleted = rest.get(f"/v1/batteries/{w.world.depleted.serial}").json()["location"]
    assert (depleted["kind"], depleted["slot_number"]) == ("slot", 5)


def test_a_request_left_sent_by_a_gateway_that_stopped_is_failed_not_resent(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    AnsweringStation.received = []
    with Session(engine) as session, session.begin():
        orphan = OcppSwapRequest(
            station_id=w.world.station.id, id_token=w.token.lower(), vin=w.world.vehicle.vin
        )
        orphan.state = "sent"  # as a gateway that died after sending it left it
        session.add(orphan)
        session.flush()
        request_id = orphan.request_id
    rest = http(api, w.world.operator_key)
    url = f"/v1/stations/{w.code}/swap-requests/{request_id}"

    async def run() -> None:
        async with connected_station(
            api.base_url, w.code, w.password, station_class=AnsweringStation
        ):
            failed = await asyncio.to_thread(wait_for_state, rest, url)
            assert failed["state"] == "failed"
            assert "stopped" in failed["status_info"]

    asyncio.run(run())
    assert AnsweringStation.received == []


# ---- ChangeAvailability ---------------------------------------------------------------------


class AvailabilityStation(OcppStation):
    received: list[tuple[str, int]]

    @on("ChangeAvailability")  # type: ignore[untyped-decorator]
    def on_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.ChangeAvailability:
        assert evse is not None
        self.received.append((operational_status, evse["id"]))
        return call_result.ChangeAvailability(status="Accepted")


def command_states(engine: Engine, station_id: int) -> list[tuple[str, Any, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(OcppCommand.action, OcppCommand.payload, OcppCommand.state)
            .where(OcppCommand.station_id == station_id)
            .order_by(OcppCommand.id)
        ).all()
    return [(r.action, r.payload, r.state) for r in rows]


def wait_answered(engine: Engine, station_id: int) -> list[tuple[str, Any, str]]:
    deadline = time.monotonic() + 5
    states = command_states(engine, station_id)
    while time.monotonic() < deadline and any(s in ("pending", "sent") for _, _, s in states):
        time.sleep(0.05)
        states = command_states(engine, station_id)
    return states


def test_disabling_and_enabling_a_slot_through_rest_reaches_the_station_as_change_availability(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    AvailabilityStation.received = []
    rest = http(api, w.world.operator_key)
    slot = f"/v1/stations/{w.code}/slots/2"

    async def run() -> None:
        async with connected_station(
            api.base_url, w.code, w.password, station_class=AvailabilityStation
        ) as station:
            await station.call(boot())
            for enabled in (False, True, True):  # the last one changes nothing: not sent
                patched = await asyncio.to_thread(rest.patch, slot, json={"enabled": enabled})
                assert patched.status_code == 200
            deadline = time.monotonic() + 15
            while len(AvailabilityStation.received) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert AvailabilityStation.received == [("Inoperative", 2), ("Operative", 2)]
            # Stay connected until the gateway has stored the answers: a command whose
            # connection closes before its answer is stored is recorded as failed.
            answered.extend(await asyncio.to_thread(wait_answered, engine, w.world.station.id))

    answered: list[tuple[str, Any, str]] = []
    asyncio.run(run())
    assert [(a, p["operationalStatus"], s) for a, p, s in answered] == [
        ("ChangeAvailability", "Inoperative", "accepted"),
        ("ChangeAvailability", "Operative", "accepted"),
    ]


def test_a_station_without_an_ocpp_password_is_sent_no_commands(
    engine: Engine, api: ApiServer
) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        world = build_swap_world(session)  # an MQTT station: no OCPP password
    rest = http(api, world.operator_key)
    patched = rest.patch(f"/v1/stations/{world.station.code}/slots/2", json={"enabled": False})
    assert patched.status_code == 200
    target = rest.patch(f"/v1/stations/{world.station.code}", json={"target_soc_pct": 80})
    assert target.status_code == 200
    assert command_states(engine, world.station.id) == []


class VariablesStation(OcppStation):
    received: list[list[dict[str, Any]]]

    @on("SetVariables")  # type: ignore[untyped-decorator]
    def on_set_variables(
        self, set_variable_data: list[dict[str, Any]], **_: Any
    ) -> call_result.SetVariables:
        self.received.append(set_variable_data)
        return call_result.SetVariables(
            set_variable_result=[
                {
                    "attribute_status": "Accepted",
                    "component": data["component"],
                    "variable": data["variable"],
                }
                for data in set_variable_data
            ]
        )


def test_a_new_target_soc_reaches_the_station_as_set_variables(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    VariablesStation.received = []
    rest = http(api, w.world.operator_key)

    async def run() -> None:
        async with connected_station(
            api.base_url, w.code, w.password, station_class=VariablesStation
        ) as station:
            await station.call(boot())
            patched = await asyncio.to_thread(
                rest.patch, f"/v1/stations/{w.code}", json={"target_soc_pct": 85}
            )
            assert patched.status_code == 200, patched.text
            deadline = time.monotonic() + 15
            while not VariablesStation.received and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # Connected until the answer is stored (see the ChangeAvailability test).
            answered.extend(await asyncio.to_thread(wait_answered, engine, w.world.station.id))

    answered: list[tuple[str, Any, str]] = []
    asyncio.run(run())
    assert VariablesStation.received == [
        [
            {
                "component": {"name": "BatterySwapCtrlr"},
                "variable": {"name": "TargetSoc"},
                "attribute_value": "85",
            }
        ]
    ]
    ((action, _, state),) = answered
    assert (action, state) == ("SetVariables", "accepted")


def test_a_client_that_does_not_offer_ocpp21_is_refused(engine: Engine, api: ApiServer) -> None:
    w = ocpp_world(engine)

    async def run() -> int:
        try:
            async with websockets.connect(
                ws_url(api.base_url, w.code),
                subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                additional_headers=basic_auth(w.code, w.password),
            ):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(run()) == 400


def test_rest_ocpp_password_replaces_the_old_one_for_the_stations_operator_only(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    other = ocpp_world(engine)
    # Another operator's key does not see the station.
    refused = http(api, other.world.operator_key).post(f"/v1/stations/{w.code}/ocpp-password")
    assert refused.status_code == 404
    created = http(api, w.world.operator_key).post(f"/v1/stations/{w.code}/ocpp-password")
    assert created.status_code == 201
    password = created.json()["password"]
    assert created.json()["station_code"] == w.code
    assert 16 <= len(password) <= 40

    async def run() -> None:
        old = await handshake_status(ws_url(api.base_url, w.code), basic_auth(w.code, w.password))
        assert old == 401
        async with connected_station(api.base_url, w.code, password) as station:
            assert (await station.call(boot())).status == "Accepted"

    asyncio.run(run())


def test_battery_swap_times_from_swapfleet_custom_data_are_the_swaps_and_not_future_ones(
    engine: Engine, api: ApiServer
) -> None:
    w = ocpp_world(engine)
    charged = w.world.charged[0].serial
    went_in = clock.now().replace(microsecond=0) - timedelta(hours=3)
    went_out = went_in + timedelta(seconds=90)
    future = clock.now() + timedelta(hours=1)

    def event(kind: str, serial: str, slot: int, at: datetime, request_id: int) -> Any:
        return call.BatterySwap(
            battery_data=[battery(slot, serial, 50.0, 95.0)],
            event_type=kind,
            id_token=id_token(w.token),
            request_id=request_id,
            custom_data={"vendor_id": "org.swapfleet", "timestamp": at.isoformat()},
        )

    async def run() -> None:
        async with connected_station(api.base_url, w.code, w.password) as station:
            await station.battery_swap(event("BatteryIn", w.world.depleted.serial, 5, went_in, 1))
            await station.battery_swap(event("BatteryOut", charged, 1, went_out, 1))
            # A time later than now (beyond the device clock skew): refused, nothing opened.
            with pytest.raises(Exception, match="PropertyConstraintViolation"):
                await station.call(
                    event("BatteryIn", w.world.charged[1].serial, 6, future, 2),
                    suppress=False,
                    skip_schema_validation=True,
                )

    asyncio.run(run())
    client = http(api, w.world.operator_key)
    swaps = client.get("/v1/swaps", params={"station_code": w.code}).json()["items"]
    assert len(swaps) == 1
    assert datetime.fromisoformat(swaps[0]["started_at"]) == went_in
    assert datetime.fromisoformat(swaps[0]["finished_at"]) == went_out
