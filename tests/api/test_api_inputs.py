"""Hostile input on every route: no 500 from a cursor or a number, nothing non-finite or
invisible is stored. The routes and the fields are read from the app, not listed here, so a
new route or field is covered the day it appears."""

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import DeadLetter, KeyRole, OrgRole, Station
from devices.contract import RecordKind
from tests.fixtures import factories
from tests.fixtures.factories import assert_problem, auth
from tests.fixtures.report_data import ingest

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _cursor(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


# Cursors that no route issues: wrong types in every position, wrong shapes, and numbers
# no column holds. Each must be a 422 on every route that takes a cursor.
GARBAGE_CURSORS = [
    [True],
    [False, True],
    [None],
    [{}],
    [[]],
    [1e308],
    [10**30],
    [-(10**30)],
    ["2020-01-01T00:00:00+00:00", True],
    ["2020-01-01T00:00:00+00:00", None],
    ["2020-01-01T00:00:00+00:00", 1e308],
    ["2020-01-01T00:00:00+00:00", 10**30],
    ["2020-01-01T00:00:00+00:00", "not-a-uuid"],
    ["2020-01-01T00:00:00", 1],
    ["2020-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"],
    [True, True],
    [1, 2, 3],
    [],
    {"a": 1},
    "a string",
    7,
]


def _path_values(session: Session) -> dict[str, str]:
    """One existing identifier for each path parameter, so that a route gets past its lookup."""
    operator = factories.make_org(session)
    oem = factories.make_org(session, OrgRole.oem)
    pack = factories.make_pack_type(session)
    station = factories.make_station(session, operator)
    model = factories.make_vehicle_model(session, oem, pack)
    vehicle = factories.make_vehicle(session, model)
    battery = factories.make_battery(
        session, pack, operator, oem=oem, slot=factories.slot_of(session, station, 1)
    )
    return {
        "organizations": operator.code,
        "pack-types": pack.code,
        "vehicle-models": model.code,
        "stations": station.code,
        "batteries": battery.serial,
        "vehicles": vehicle.vin,
        "swaps": "00000000-0000-0000-0000-000000000000",
        "slots": "1",
        "id-tokens": "RFID-0001",
        "swap-requests": "1",
    }


def _health_reading(session: Session, values: dict[str, str]) -> None:
    # Reports bin SoH readings and cycles: the fleet summary needs one to bin.
    station_id = session.scalar(select(Station.id).where(Station.code == values["stations"]))
    row = (values["batteries"], T0, station_id, 95.0, 1.0, 3.2, 3.3, 30.0, 100)
    ingest(session, RecordKind.health, [row])


def _fill(path: str, values: dict[str, str]) -> str:
    """Each `{param}` takes the identifier of the collection segment before it."""
    parts = path.split("/")
    return "/".join(
        values[parts[i - 1]] if part.startswith("{") else part for i, part in enumerate(parts)
    )


def _get_routes(app: FastAPI) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in app.openapi()["paths"].items():
        if "get" in operations:
            yield path, operations["get"]


def _query_params(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p["schema"] for p in operation.get("parameters", []) if p["in"] == "query"}


def _required_enums(app: FastAPI, operation: dict[str, Any]) -> dict[str, str]:
    """The first value of each required enum query parameter (e.g. the telemetry `kind`)."""
    components = app.openapi()["components"]["schemas"]
    out: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and parameter.get("required"):
            schema = parameter["schema"]
            if "$ref" in schema:
                schema = components[schema["$ref"].split("/")[-1]]
            out[parameter["name"]] = schema["enum"][0]
    return out


def test_every_cursor_parameter_refuses_cursors_of_the_wrong_types(
    client: TestClient, session: Session
) -> None:
    values = _path_values(session)
    headers = auth(factories.make_key(session, KeyRole.admin))
    walked = 0
    for path, operation in _get_routes(client.app):  # type: ignore[arg-type]
        if "cursor" not in _query_params(operation):
            continue
        walked += 1
        url = _fill(path, values)
        required = _required_enums(client.app, operation)  # type: ignore[arg-type]
        for garbage in GARBAGE_CURSORS:
            params = {**required, "cursor": _cursor(garbage)}
            response = client.get(url, params=params, headers=headers)
            assert response.status_code == 422, (path, garbage, response.text)
            assert_problem(response, 422, "InvalidCursor")
    # Every list route of the API: organizations, pack types, vehicle models, stations, slots,
    # batteries, history, vehicles, swaps, telemetry (3), charging sessions, dead letters,
    # the batteries report.
    assert walked >= 14


def test_dead_letter_cursor_of_true_is_a_422_not_a_500(
    client: TestClient, session: Session
) -> None:
    session.add(
        DeadLetter(
            topic="swapfleet/v1/stations/X/charging", reason="invalid_json", detail="x",
            payload=b"x", payload_bytes=1, received_at=T0,
        )
    )  # fmt: skip
    session.flush()
    headers = auth(factories.make_key(session, KeyRole.admin))
    response = client.get("/v1/dead-letters?cursor=W3RydWVd", headers=headers)
    assert_problem(response, 422, "InvalidCursor")


# Values for numeric parameters: out of every sensible range, non-finite, subnormal, and
# beyond what a database integer holds.
HOSTILE_NUMBERS = [
    "1e309", "-1e309", "inf", "-inf", "nan", "1e-320", "-1e-320", "1e308", "-1e308",
    str(10**30), str(-(10**30)), "0", "-1", "2147483648", "9223372036854775808",
]  # fmt: skip


def _numeric(schema: dict[str, Any]) -> bool:
    types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    return bool(types & {"number", "integer"})


def _window(params: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A window around T0 in the type the route takes, so a report has data to bin."""
    window: dict[str, str] = {}
    for name, delta in (("from", timedelta(days=-3)), ("to", timedelta(days=3))):
        if name in params:
            formats = {params[name].get("format")} | {
                s.get("format") for s in params[name].get("anyOf", [])
            }
            at = T0 + delta
            window[name] = at.date().isoformat() if "date" in formats else at.isoformat()
    return window


def test_no_numeric_query_parameter_gives_a_500(client: TestClient, session: Session) -> None:
    values = _path_values(session)
    _health_reading(session, values)
    headers = auth(factories.make_key(session, KeyRole.admin))
    walked = 0
    for path, operation in _get_routes(client.app):  # type: ignore[arg-type]
        url = _fill(path, values)
        params = _query_params(operation)
        for name, schema in params.items():
            if not _numeric(schema):
                continue
            walked += 1
            for number in HOSTILE_NUMBERS:
                query = {**_window(params), name: number}
                response = client.get(url, params=query, headers=headers)
                assert response.status_code < 500, (path, name, number, response.text)
    assert walked >= 8


def test_fleet_summary_with_a_subnormal_bin_width_is_a_422(
    client: TestClient, session: Session
) -> None:
    values = _path_values(session)
    _health_reading(session, values)
    headers = auth(factories.make_key(session, KeyRole.admin))
    response = client.get(
        "/v1/reports/fleet-summary",
        params={"cycle_bin_width": "1e-320", "from": "2026-03-01", "to": "2026-03-03"},
        headers=headers,
    )
    assert response.status_code == 422, response.text


def test_slot_number_beyond_the_column_is_a_422(client: TestClient, session: Session) -> None:
    values = _path_values(session)
    headers = auth(factories.make_key(session, KeyRole.admin))
    response = client.patch(
        f"/v1/stations/{values['stations']}/slots/{10**30}",
        json={"enabled": False},
        headers=headers,
    )
    assert response.status_code == 422, response.text


# --- request bodies: every number finite, every text free of control characters -------------

HOSTILE_TEXTS = ["\u001b[2J", "a\u202eb", "tab\there", "line\nbreak", "\u0085", "\u2066x", "\x7f"]


def _leaves(
    schema: dict[str, Any], components: dict[str, Any], want: str
) -> Iterator[tuple[object, str]]:
    """A JSON value per leaf of type `want`, holding the marker there; and the leaf's name."""
    if "$ref" in schema:
        yield from _leaves(components[schema["$ref"].split("/")[-1]], components, want)
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            yield from _leaves(option, components, want)
    kind = schema.get("type")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        fixed = {n: p["const"] for n, p in properties.items() if "const" in p}
        for name, sub in properties.items():
            for value, leaf in _leaves(sub, components, want):
                yield {**fixed, name: value}, leaf or name
    elif kind == "array":
        for value, leaf in _leaves(schema.get("items", {}), components, want):
            yield [value], leaf
    elif kind == want and not {"enum", "const", "format"} & schema.keys():
        yield "__MARK__", ""


def _body_cases(app: FastAPI, want: str) -> Iterator[tuple[str, str, object, str]]:
    """(method, path, body, leaf) for every `want`-typed leaf of every request body."""
    spec = app.openapi()
    components = spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            schema = content["application/json"]["schema"]
            for body, leaf in _leaves(schema, components, want):
                yield method, path, body, leaf


def _refused_at(
    client: TestClient, headers: dict[str, str], method: str, url: str, text: str, leaf: str
) -> bool:
    """The request is a 422 that names the leaf (not merely one for the fields left out)."""
    response = client.request(
        method, url, content=text, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code < 500, (method, url, text, response.text)
    if response.status_code != 422:
        return False
    errors = response.json().get("errors", [])
    return any(leaf in error["loc"] and error["type"] != "missing" for error in errors)


def test_every_number_in_a_request_body_refuses_infinity_and_nan(
    client: TestClient, session: Session
) -> None:
    values = _path_values(session)
    headers = auth(factories.make_key(session, KeyRole.admin))
    cases = list(_body_cases(client.app, "number"))  # type: ignore[arg-type]
    assert len(cases) >= 15
    for method, path, body, leaf in cases:
        for hostile in ("1e309", "-1e309", "NaN", "Infinity"):
            text = json.dumps(body).replace('"__MARK__"', hostile)
            assert _refused_at(client, headers, method, _fill(path, values), text, leaf), (
                method, path, leaf, hostile,
            )  # fmt: skip


def test_every_text_in_a_request_body_refuses_control_and_bidi_characters(
    client: TestClient, session: Session
) -> None:
    values = _path_values(session)
    headers = auth(factories.make_key(session, KeyRole.admin))
    cases = list(_body_cases(client.app, "string"))  # type: ignore[arg-type]
    assert len(cases) >= 20
    for method, path, body, leaf in cases:
        for hostile in HOSTILE_TEXTS:
            text = json.dumps(body).replace('"__MARK__"', json.dumps(hostile))
            assert _refused_at(client, headers, method, _fill(path, values), text, leaf), (
                method, path, leaf, hostile,
            )  # fmt: skip


def test_register_battery_with_infinite_cycles_is_a_422(
    client: TestClient, session: Session
) -> None:
    owner = factories.make_org(session, OrgRole.owner)
    pack = factories.make_pack_type(session)
    headers = auth(factories.make_key(session, KeyRole.admin))
    body = json.dumps(
        {
            "serial": factories.unique("BAT"),
            "pack_type_code": pack.code,
            "owner_code": owner.code,
            "location": {"kind": "warehouse"},
            "equivalent_full_cycles": "__MARK__",
        }
    ).replace('"__MARK__"', "1e309")
    response = client.post(
        "/v1/batteries",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text


def test_station_name_with_an_escape_sequence_is_a_422_naming_the_character(
    client: TestClient, session: Session
) -> None:
    operator = factories.make_org(session)
    headers = auth(factories.make_key(session, KeyRole.operator, operator))
    body = {
        "code": factories.unique("ST"),
        "name": "\u001b[2J\u202e",
        "latitude": 39.9,
        "longitude": 116.4,
        "timezone": "Asia/Shanghai",
    }
    response = client.post("/v1/stations", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert "U+001B" in response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [("vin", "LSFAB1234CZ9\u001b[2J"), ("vin", "lowercase-vin-123"), ("station_code", "ST\u202e")],
)
def test_swap_vin_and_station_code_follow_their_resources_patterns(
    client: TestClient, session: Session, field: str, value: str
) -> None:
    operator = factories.make_org(session)
    headers = auth(factories.make_key(session, KeyRole.operator, operator))
    body = {
        "station_code": "ST00001",
        "vin": factories.unique_vin(),
        "removed_battery_serial": "BAT00001",
        field: value,
    }
    response = client.post("/v1/swaps", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert any(error["loc"][-1] == field for error in response.json()["errors"]), response.text


HOSTILE_PARAMETER_TEXTS = ["a\x00b", "\u001b[2J", "\u202e", "%", "'", "\\", "x" * 10_000]


def test_no_text_parameter_gives_a_500(client: TestClient, session: Session) -> None:
    values = _path_values(session)
    headers = auth(factories.make_key(session, KeyRole.admin))
    walked = 0
    for path, operation in _get_routes(client.app):  # type: ignore[arg-type]
        params = _query_params(operation)
        required = _required_enums(client.app, operation)  # type: ignore[arg-type]
        texts = [n for n, s in params.items() if not _numeric(s) and n not in required]
        path_params = [p for p in path.split("/") if p.startswith("{")]
        for hostile in HOSTILE_PARAMETER_TEXTS:
            for name in texts:
                walked += 1
                url = _fill(path, values)
                response = client.get(url, params={**required, name: hostile}, headers=headers)
                assert response.status_code < 500, (path, name, hostile, response.text)
            for name in path_params:
                walked += 1
                url = _fill(path, {**values, _segment_before(path, name): quote(hostile, safe="")})
                response = client.get(url, params=required, headers=headers)
                assert response.status_code < 500, (path, name, hostile, response.text)
    assert walked > 50


def _segment_before(path: str, param: str) -> str:
    parts = path.split("/")
    return parts[parts.index(param) - 1]


EXTREME_TIMES = [
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "9999-12-31",
    "2026-01-01T00:00:00", "2026-01-01T00:00:00+23:59",
]  # fmt: skip


def _time_typed(schema: dict[str, Any]) -> bool:
    formats = {schema.get("format")} | {s.get("format") for s in schema.get("anyOf", [])}
    return bool(formats & {"date", "date-time"})


def test_no_time_parameter_gives_a_500(client: TestClient, session: Session) -> None:
    values = _path_values(session)
    _health_reading(session, values)
    headers = auth(factories.make_key(session, KeyRole.admin))
    walked = 0
    for path, operation in _get_routes(client.app):  # type: ignore[arg-type]
        params = _query_params(operation)
        required = _required_enums(client.app, operation)  # type: ignore[arg-type]
        for name, schema in params.items():
            if not _time_typed(schema):
                continue
            walked += 1
            for at in EXTREME_TIMES:
                response = client.get(
                    _fill(path, values), params={**required, name: at}, headers=headers
                )
                assert response.status_code < 500, (path, name, at, response.text)
    assert walked >= 10


def test_swap_times_at_the_ends_of_the_calendar_give_no_500(
    client: TestClient, session: Session
) -> None:
    operator = factories.make_org(session)
    headers = auth(factories.make_key(session, KeyRole.operator, operator))
    station = factories.make_station(session, operator)
    for at in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        body = {
            "station_code": station.code,
            "vin": factories.unique_vin(),
            "removed_battery_serial": "BAT00001",
            "started_at": at,
        }
        response = client.post("/v1/swaps", json=body, headers=headers)
        assert response.status_code < 500, (at, response.text)
