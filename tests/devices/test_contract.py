"""The AsyncAPI document, the device-side payload models and the ingest's topic parsing
describe one contract."""

from typing import Any

import orjson
import pytest
import yaml

from devices.contract import (
    RECORD_MODELS,
    ChargingSample,
    PayloadError,
    RecordKind,
    parse_topic,
    split_records,
    station_topic,
    validate_record,
    vehicle_topic,
)
from tests.fixtures.paths import REPO_ROOT

DOC = yaml.safe_load((REPO_ROOT / "docs" / "asyncapi.yaml").read_text())
CHANNEL_KINDS = {
    "charging": RecordKind.charging,
    "health": RecordKind.health,
    "capacity": RecordKind.capacity,
    "status": RecordKind.status,
    "vehicleTelemetry": RecordKind.vehicle,
}
_IGNORED = {"title", "default", "description"}


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    """Inline $refs and drop what only documents, so two schemas compare by meaning."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = root
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return _resolve(target, root)
        if "anyOf" in node and {"type": "null"} in node["anyOf"]:  # Optional[X] is X, not required
            (inner,) = [n for n in node["anyOf"] if n != {"type": "null"}]
            return _resolve(inner, root)
        return {k: _resolve(v, root) for k, v in node.items() if k not in _IGNORED}
    if isinstance(node, list):
        return [_resolve(n, root) for n in node]
    return node


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": sorted(schema.get("required", [])),
        "properties": schema["properties"],
        "additionalProperties": schema.get("additionalProperties"),
    }


@pytest.mark.parametrize("channel", sorted(CHANNEL_KINDS))
def test_asyncapi_payload_schema_matches_the_device_model(channel: str) -> None:
    kind = CHANNEL_KINDS[channel]
    (message,) = DOC["channels"][channel]["messages"].values()
    payload = _resolve(message, DOC)["payload"]
    single = payload["oneOf"][0] if "oneOf" in payload else payload
    model_schema = RECORD_MODELS[kind].model_json_schema()
    assert _object_schema(single) == _object_schema(_resolve(model_schema, model_schema))


@pytest.mark.parametrize("channel", sorted(CHANNEL_KINDS))
def test_asyncapi_channel_addresses_are_the_topics_the_ingest_parses(channel: str) -> None:
    address = DOC["channels"][channel]["address"]
    topic = address.replace("{station_code}", "ST-1").replace("{vin}", "LVIN0000000000001")
    identity = parse_topic(topic)
    assert identity is not None
    assert identity.kind is CHANNEL_KINDS[channel]
    if identity.kind is RecordKind.vehicle:
        assert topic == vehicle_topic("LVIN0000000000001")
    else:
        assert topic == station_topic("ST-1", identity.kind)


def test_asyncapi_batch_limit_is_the_contract_limit() -> None:
    payload = _resolve(DOC["components"]["messages"]["chargingSample"], DOC)["payload"]
    records = payload["oneOf"][1]["properties"]["records"]
    assert (records["minItems"], records["maxItems"]) == (1, 1000)
    with pytest.raises(PayloadError) as exc:
        split_records(orjson.dumps({"records": [{}] * 1001}))
    assert exc.value.reason == "too_many_records"


@pytest.mark.parametrize(
    "topic",
    [
        "swapfleet/v1/stations/ST1/firmware",
        "swapfleet/v1/stations/ST1",
        "swapfleet/v1/vehicles/V1/charging",
        "swapfleet/v2/stations/ST1/charging",
        "swapfleet/v1/stations/../charging",
    ],
)
def test_topics_outside_the_contract_are_not_parsed(topic: str) -> None:
    assert parse_topic(topic) is None


def test_unknown_fields_are_kept_as_extra() -> None:
    record = validate_record(
        RecordKind.charging,
        {
            "battery_serial": "B1", "slot": 2, "ts": "2026-03-01T08:00:00+08:00",
            "soc_pct": 55, "voltage_v": 510, "current_a": 120, "power_kw": 61,
            "temp_c_min": 20, "temp_c_max": 29, "energy_kwh": 12.5, "bms_fw": "7.1",
        },
    )  # fmt: skip
    assert isinstance(record, ChargingSample)
    assert record.extra == {"bms_fw": "7.1"}
    assert record.ts.utcoffset() is not None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"soc_pct": 100.5}, "impossible_value"),
        ({"temp_c_min": -51}, "impossible_value"),
        ({"energy_kwh": -0.1}, "impossible_value"),
        ({"ts": "2026-03-01T08:00:00"}, "schema"),
        ({"slot": "two"}, "schema"),
    ],
)
def test_invalid_records_are_classified(overrides: dict[str, Any], reason: str) -> None:
    raw = {
        "battery_serial": "B1", "slot": 2, "ts": "2026-03-01T08:00:00Z", "soc_pct": 55,
        "voltage_v": 510, "current_a": 120, "power_kw": 61, "temp_c_min": 20,
        "temp_c_max": 29, "energy_kwh": 12.5, **overrides,
    }  # fmt: skip
    with pytest.raises(PayloadError) as exc:
        validate_record(RecordKind.charging, raw)
    assert exc.value.reason == reason


def test_non_json_and_non_object_payloads_are_refused() -> None:
    for payload, reason in [
        (b"\xff", "not_json"),
        (b"[1,2]", "schema"),
        (b'{"records": []}', "schema"),
    ]:
        with pytest.raises(PayloadError) as exc:
            split_records(payload)
        assert exc.value.reason == reason


def _numeric_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: prop
        for name, prop in schema["properties"].items()
        if prop.get("type") in ("number", "integer")
    }


@pytest.mark.parametrize("channel", sorted(CHANNEL_KINDS))
def test_every_number_of_the_contract_is_bounded_on_both_sides(channel: str) -> None:
    """An unbounded number let one record overflow every OEM's fleet summary (issue 11)."""
    kind = CHANNEL_KINDS[channel]
    (message,) = DOC["channels"][channel]["messages"].values()
    payload = _resolve(message, DOC)["payload"]
    single = payload["oneOf"][0] if "oneOf" in payload else payload
    raw_model_schema = RECORD_MODELS[kind].model_json_schema()
    model_schema = _resolve(raw_model_schema, raw_model_schema)
    schemas = [single, model_schema]
    if kind is RecordKind.status:
        schemas += [s["properties"]["slots"]["items"] for s in (single, model_schema)]
    for schema in schemas:
        numbers = _numeric_fields(schema)
        assert numbers or kind is RecordKind.status
        for name, prop in numbers.items():
            assert "minimum" in prop, f"{channel}.{name} has no minimum"
            assert "maximum" in prop, f"{channel}.{name} has no maximum"
            assert prop["maximum"] < 1e12, f"{channel}.{name}: {prop['maximum']} is not physical"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("energy_kwh", 1e308),
        ("energy_kwh", 2000.5),
        ("voltage_v", 1500.5),
        ("current_a", -3000.5),
        ("power_kw", 4000.5),
        ("slot", 10**30),
    ],
)
def test_absurd_charging_values_are_impossible_values(field: str, value: float) -> None:
    record = {
        "battery_serial": "B1", "slot": 1, "ts": "2026-05-01T10:00:00+02:00", "soc_pct": 40,
        "voltage_v": 1000, "current_a": 3000, "power_kw": 3750, "temp_c_min": 20,
        "temp_c_max": 30, "energy_kwh": 600,
    }  # fmt: skip
    validate_record(RecordKind.charging, record)  # a megawatt-charged heavy-truck pack is fine
    with pytest.raises(PayloadError) as exc:
        validate_record(RecordKind.charging, {**record, field: value})
    assert exc.value.reason == "impossible_value"


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (RecordKind.health, "cycle_count", 10**30),
        (RecordKind.health, "internal_resistance_mohm", 1e308),
        (RecordKind.capacity, "capacity_ah", 1e308),
        (RecordKind.capacity, "capacity_kwh", 1e308),
        (RecordKind.vehicle, "odometer_km", 1e12),
    ],
)
def test_absurd_health_capacity_and_vehicle_values_are_impossible_values(
    kind: RecordKind, field: str, value: float
) -> None:
    records: dict[RecordKind, dict[str, Any]] = {
        RecordKind.health: {
            "battery_serial": "B1", "ts": "2026-05-01T10:00:00Z", "soh_pct": 90,
            "internal_resistance_mohm": 300, "cell_voltage_min_v": 3.2,
            "cell_voltage_max_v": 3.3, "temp_c_max": 30, "cycle_count": 9000,
        },
        RecordKind.capacity: {
            "battery_serial": "B1", "ts": "2026-05-01T10:00:00Z", "capacity_kwh": 600,
            "capacity_ah": 1200, "method": "full_charge", "temp_c": 25,
        },
        RecordKind.vehicle: {
            "battery_serial": "B1", "ts": "2026-05-01T10:00:00Z", "soc_pct": 50,
            "odometer_km": 1_800_000, "pack_voltage_v": 900, "pack_current_a": -1500,
            "temp_c_max": 40,
        },
    }  # fmt: skip
    validate_record(kind, records[kind])
    with pytest.raises(PayloadError) as exc:
        validate_record(kind, {**records[kind], field: value})
    assert exc.value.reason == "impossible_value"
