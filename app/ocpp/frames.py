"""OCPP-J framing: a text message is a JSON array, `[2, id, action, payload]` for a CALL,
`[3, id, payload]` for a CALLRESULT, `[4, id, code, description, details]` for a CALLERROR
(OCPP 2.1 adds 5, CALLRESULTERROR, and 6, SEND). Payloads are checked against the OCPP 2.1
JSON schemas the `ocpp` package ships; what fails becomes the CALLERROR the standard names
for it, never an exception that would end the connection."""

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import ocpp
import orjson
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

OCPP_VERSION = "2.1"
SUBPROTOCOL = "ocpp2.1"
SCHEMAS = Path(ocpp.__file__).parent / "v21" / "schemas"

CALL, CALLRESULT, CALLERROR, CALLRESULTERROR, SEND = 2, 3, 4, 5, 6

# OCPP-J: a message whose id cannot be read is answered with this id.
UNKNOWN_MESSAGE_ID = "-1"


class CallError(Exception):
    """An OCPP RPC framework error: `code` is one of the standard's error codes."""

    def __init__(self, code: str, description: str, message_id: str = UNKNOWN_MESSAGE_ID):
        super().__init__(description)
        self.code = code
        self.description = description
        self.message_id = message_id


@dataclass(frozen=True)
class Call:
    message_id: str
    action: str
    payload: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Reply:
    """A CALLRESULT or CALLERROR from the station to a CALL the gateway sent."""

    message_id: str
    payload: dict[str, Any] | None
    error_code: str | None = None


def known_actions() -> frozenset[str]:
    """Every action OCPP 2.1 defines (a Request schema exists for it)."""
    return _known_actions()


@cache
def _known_actions() -> frozenset[str]:
    return frozenset(p.name.removesuffix("Request.json") for p in SCHEMAS.glob("*Request.json"))


@cache
def _schema(schema_name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((SCHEMAS / f"{schema_name}.json").read_bytes())
    return loaded


@cache
def validator(schema_name: str) -> Draft4Validator:
    # The schemas declare draft-06; what they use of it (no const, no contains, no
    # propertyNames) reads the same in draft 4, which is how the `ocpp` package checks them.
    return Draft4Validator(_schema(schema_name))


@cache
def fast_validator(schema_name: str) -> jsonschema_rs.Draft4Validator:
    # The same schema and draft, compiled (Rust): about 3 us for a MeterValues against 5 ms
    # for the pure-Python validator, which was the gateway's largest CPU cost under load
    # (docs/benchmarks.md, OCPP gateway). Formats are not checked, as the Python one does not.
    return jsonschema_rs.Draft4Validator(_schema(schema_name), validate_formats=False)


def parse(text: str | bytes) -> Call | Reply:
    """The message, or CallError with the code OCPP-J gives for what is wrong with it."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CallError("RpcFrameworkError", "the message is not valid JSON") from exc
    if not isinstance(message, list) or not message:
        raise CallError("RpcFrameworkError", "the message is not a JSON array")
    kind = message[0]
    message_id = message[1] if len(message) > 1 and isinstance(message[1], str) else None
    if message_id is None or not 1 <= len(message_id) <= 36:
        raise CallError("RpcFrameworkError", "the message id is missing or not a string of 1-36")
    if kind == CALL:
        if len(message) != 4 or not isinstance(message[2], str):
            raise CallError("RpcFrameworkError", "a CALL has 4 elements", message_id)
        action, payload = message[2], message[3]
        if not isinstance(payload, dict):
            raise CallError("FormatViolation", "the payload is not a JSON object", message_id)
        return Call(message_id, action, payload)
    if kind == CALLRESULT and len(message) == 3 and isinstance(message[2], dict):
        return Reply(message_id, message[2])
    if kind in (CALLERROR, CALLRESULTERROR) and len(message) == 5:
        return Reply(message_id, None, error_code=str(message[2]))
    if kind == SEND and len(message) == 4 and isinstance(message[3], dict):
        # OCPP 2.1's unconfirmed message (NotifyPeriodicEventStream): never answered.
        return Reply(message_id, message[3], error_code=None)
    if kind in (CALLRESULT, CALLERROR, CALLRESULTERROR, SEND):
        raise CallError("RpcFrameworkError", f"malformed message of type {kind}", message_id)
    raise CallError(
        "MessageTypeNotSupported", f"message type {kind!r} is not supported", message_id
    )


def check_request(call: Call) -> None:
    """CallError unless the payload is valid for its action's Request schema."""
    if call.action not in known_actions():
        raise CallError(
            "NotImplemented", f"{call.action!r} is not an OCPP 2.1 action", call.message_id
        )
    error = _first_error(f"{call.action}Request", call.payload)
    if error is not None:
        raise CallError(_error_code(error), _describe(error), call.message_id)


def schema_errors(schema_name: str, payload: dict[str, Any]) -> str | None:
    error = _first_error(schema_name, payload)
    return None if error is None else _describe(error)


def _first_error(schema_name: str, payload: dict[str, Any]) -> ValidationError | None:
    """The compiled validator passes the valid messages, nearly all of them; the Python one
    names what is wrong with the others (its ValidationError gives OCPP-J's error code), and
    is the reference: a message only it accepts is valid."""
    if fast_validator(schema_name).is_valid(payload):
        return None
    return next(iter(validator(schema_name).iter_errors(payload)), None)


def _error_code(error: ValidationError) -> str:
    # OCPP-J's codes: a missing required field is an occurrence constraint, a wrong JSON type
    # a type constraint, a value out of its range or enum a property constraint, anything
    # else (an unknown field) a format violation.
    if error.validator in ("required", "minItems", "maxItems"):
        return "OccurrenceConstraintViolation"
    if error.validator == "type":
        return "TypeConstraintViolation"
    if error.validator in ("enum", "minimum", "maximum", "maxLength", "minLength", "format"):
        return "PropertyConstraintViolation"
    return "FormatViolation"


def _describe(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "payload"
    return f"{where}: {error.message}"[:255]


def call_result(message_id: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALLRESULT, message_id, payload])


def call_error(error: CallError) -> bytes:
    return orjson.dumps([CALLERROR, error.message_id, error.code, error.description, {}])


def call(message_id: str, action: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALL, message_id, action, payload])
