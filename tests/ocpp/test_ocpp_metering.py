"""Meter values of batteries charging in slots, sent over OCPP to a real `swapfleet api`
process by the `ocpp` package's v21 ChargePoint: stored as charging samples in the ingest's
tables, once, with the ingest's derived state and dead letters."""

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from ocpp.v21 import call
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.core import clock
from app.ocpp import service as ocpp_service
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.api_server import ApiServer, running_api
from tests.fixtures.committed import truncate_all
from tests.fixtures.ocpp_station import connected_station, exchange, raw_connection
from tests.fixtures.swap_world import SwapWorld, build_swap_world


@pytest.fixture(scope="module")
def api(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log = tmp_path_factory.mktemp("ocpp_metering") / "api.log"
    with running_api(TEST_DATABASE_URL, log) as server:
        yield server
    # This module's worlds are committed: gone before the worker's next module.
    truncate_all(engine)


def world(engine: Engine) -> tuple[SwapWorld, str]:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        w = build_swap_world(session, charged_socs=(40.0, 50.0))
        password = ocpp_service.set_password(session, w.station.code)
    return w, password


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def meter_value(ts: datetime, soc: float, energy_wh: float) -> dict[str, Any]:
    return {
        "timestamp": iso(ts),
        "sampled_value": [
            {"value": soc, "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}},
            {"value": 402.5, "measurand": "Voltage", "unit_of_measure": {"unit": "V"}},
            {"value": 30.0, "measurand": "Current.Import", "unit_of_measure": {"unit": "A"}},
            {"value": 12100.0, "measurand": "Power.Active.Import"},
            {"value": energy_wh, "measurand": "Energy.Active.Import.Register"},
        ],
        # OCPP 2.1 has no Temperature measurand: the pack's, in customData (docs/ocpp.md).
        "custom_data": {"vendor_id": "org.swapfleet", "temp_c_min": 24.0, "temp_c_max": 31.5},
    }


def samples(engine: Engine, serial: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT ts, slot, soc_pct, power_kw, energy_kwh, temp_c_min, temp_c_max"
                    " FROM charging_samples WHERE battery_serial = :s ORDER BY ts"
                ),
                {"s": serial},
            )
        )


def dead_letters(engine: Engine, code: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT topic, reason, detail FROM dead_letters WHERE station_code = :c"
                    " ORDER BY id"
                ),
                {"c": code},
            )
        )


def test_transaction_event_meter_values_become_charging_samples_stored_once(
    engine: Engine, api: ApiServer
) -> None:
    w, password = world(engine)
    serial = w.charged[0].serial  # in slot 1
    t0 = clock.now().replace(microsecond=0) - timedelta(minutes=3)
    started = call.TransactionEvent(
        event_type="Started",
        timestamp=iso(t0),
        trigger_reason="ChargingStateChanged",
        seq_no=0,
        transaction_info={"transaction_id": "tx-1", "charging_state": "Charging"},
        evse={"id": 1, "connector_id": 1},
        meter_value=[meter_value(t0, 41.0, 0.0)],
    )
    # A later event names the transaction only: the evse is the one it started on.
    updated = call.TransactionEvent(
        event_type="Updated",
        timestamp=iso(t0 + timedelta(minutes=1)),
        trigger_reason="MeterValuePeriodic",
        seq_no=1,
        transaction_info={"transaction_id": "tx-1"},
        meter_value=[
            meter_value(t0 + timedelta(minutes=1), 44.0, 200.0),
            meter_value(t0 + timedelta(minutes=2), 47.0, 400.0),
        ],
    )

    async def run() -> None:
        async with connected_station(api.base_url, w.station.code, password) as station:
            assert await station.call(started) is not None
            assert await station.call(updated) is not None
            # The station resends (it did not see the answer): nothing is stored twice.
            assert await station.call(updated) is not None

    asyncio.run(run())
    rows = samples(engine, serial)
    assert [(r[1], r[2]) for r in rows] == [(1, 41.0), (1, 44.0), (1, 47.0)]
    assert rows[1][3] == pytest.approx(12.1)  # W -> kW
    assert rows[2][4] == pytest.approx(0.4)  # Wh -> kWh
    assert (rows[0][5], rows[0][6]) == (24.0, 31.5)
    with engine.connect() as conn:
        soc, readings_at = conn.execute(
            text("SELECT soc_pct, readings_at FROM batteries WHERE serial = :s"), {"s": serial}
        ).one()
        daily = conn.execute(
            text("SELECT sum(charging_samples) FROM battery_daily WHERE battery_serial = :s"),
            {"s": serial},
        ).scalar_one()
    # Derived state follows, as for MQTT samples: the latest SoC, the daily aggregate
    # counting each sample once.
    assert soc == 47.0
    assert readings_at == t0 + timedelta(minutes=2)
    assert daily == 3
    assert dead_letters(engine, w.station.code) == []


def test_meter_values_of_a_slot_are_stored_and_an_empty_slot_is_dead_lettered(
    engine: Engine, api: ApiServer
) -> None:
    w, password = world(engine)
    ts = clock.now().replace(microsecond=0) - timedelta(minutes=1)

    async def run() -> None:
        async with connected_station(api.base_url, w.station.code, password) as station:
            await station.call(call.MeterValues(evse_id=2, meter_value=[meter_value(ts, 52, 10)]))
            # Slot 6 holds no battery: answered (the station must not resend it forever),
            # nothing stored, dead-lettered with the reason.
            await station.call(call.MeterValues(evse_id=6, meter_value=[meter_value(ts, 52, 10)]))

    asyncio.run(run())
    assert [(r[1], r[2]) for r in samples(engine, w.charged[1].serial)] == [(2, 52.0)]
    letters = dead_letters(engine, w.station.code)
    assert [(t, r) for t, r, _ in letters] == [
        (f"ocpp/{w.station.code}/MeterValues", "ocpp_mapping")
    ]
    assert "no battery is in this slot" in letters[0][2]


def test_a_malformed_transaction_event_gets_the_standard_callerror_and_a_dead_letter(
    engine: Engine, api: ApiServer
) -> None:
    w, password = world(engine)
    # No transactionInfo, a required field.
    bad = {
        "eventType": "Updated",
        "timestamp": iso(clock.now()),
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 3,
    }
    # A meter value without the measurands of a charging sample.
    thin = {
        **bad,
        "transactionInfo": {"transactionId": "tx-9"},
        "evse": {"id": 1},
        "meterValue": [{"timestamp": iso(clock.now()), "sampledValue": [{"value": 3.0}]}],
    }

    async def run() -> None:
        async with raw_connection(api.base_url, w.station.code, password) as connection:
            answer = await exchange(connection, orjson.dumps([2, "m1", "TransactionEvent", bad]))
            assert answer[:3] == [4, "m1", "OccurrenceConstraintViolation"]
            answer = await exchange(connection, orjson.dumps([2, "m2", "TransactionEvent", thin]))
            assert answer == [3, "m2", {}]
            # The connection goes on.
            answer = await exchange(connection, orjson.dumps([2, "m3", "Heartbeat", {}]))
            assert answer[:2] == [3, "m3"]

    asyncio.run(run())
    letters = dead_letters(engine, w.station.code)
    topic = f"ocpp/{w.station.code}/TransactionEvent"
    assert [(t, r) for t, r, _ in letters] == [(topic, "ocpp_schema"), (topic, "ocpp_mapping")]
    assert letters[0][2].startswith("OccurrenceConstraintViolation")
    assert "no SoC" in letters[1][2]
    assert samples(engine, w.charged[0].serial) == []


def test_a_meter_value_older_than_the_swap_that_filled_the_slot_is_not_given_to_the_new_battery(
    engine: Engine, api: ApiServer
) -> None:
    w, password = world(engine)
    with Session(engine) as session, session.begin():
        token = f"TOK-{w.vehicle.vin}"
        ocpp_service.register_id_token(session, token, w.vehicle.vin)
    depleted = w.depleted.serial
    now = clock.now().replace(microsecond=0)

    def swap(kind: str, slot: int, serial: str, soc: float) -> call.BatterySwap:
        return call.BatterySwap(
            battery_data=[{"evse_id": slot, "serial_number": serial, "soc": soc, "soh": 95.0}],
            event_type=kind,
            id_token={"id_token": token, "type": "Central"},
            request_id=1,
        )

    async def run() -> None:
        async with connected_station(api.base_url, w.station.code, password) as station:
            # The vehicle's battery goes into slot 5 now, the charged one of slot 1 out.
            await station.battery_swap(swap("BatteryIn", 5, depleted, 14.0))
            await station.battery_swap(swap("BatteryOut", 1, w.charged[0].serial, 40.0))
            # Slot 5's meter from an hour ago measured whatever was there then, not this one:
            # the gateway gives it to no battery (without that check the ingest's custody
            # check would still refuse it here, as identity_mismatch, since this battery was
            # in the vehicle then; the gateway's check also covers a battery moved between
            # slots of one station, which the ingest's station-level check cannot see).
            old = meter_value(now - timedelta(hours=1), 20.0, 0.0)
            await station.call(call.MeterValues(evse_id=5, meter_value=[old]))
            fresh = meter_value(now, 21.0, 50.0)
            await station.call(call.MeterValues(evse_id=5, meter_value=[fresh]))

    asyncio.run(run())
    assert [(r[1], r[2]) for r in samples(engine, depleted)] == [(5, 21.0)]
    letters = dead_letters(engine, w.station.code)
    assert [r for _, r, _ in letters] == ["ocpp_mapping"]
    assert f"battery {depleted} arrived at" in letters[0][2]
