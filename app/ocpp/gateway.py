"""The OCPP 2.1 central-system endpoint: `/ocpp/{station_code}`, a WebSocket route of the API
app (subprotocol `ocpp2.1`), so `swapfleet api`, `swapfleet up` and docker-compose's `api`
serve it with the REST routes, on every API worker and every API instance.

A station holds one connection, wherever it lands: the handshake takes a lease on the
station's row of ocpp_connections (app/ocpp/service.py acquire_lease), which a second
connection, on this process or another instance, finds taken. Each process renews the
leases of its own connections in one statement per period; if it dies, its stations may
reconnect anywhere once their leases run out (SWAPFLEET_OCPP_LEASE_S).

A message is handled to its end before the next one is read (OCPP-J: a station sends one CALL
at a time and waits for its answer), and each runs its database work in one unit of work in
a worker thread, committed before the answer is sent.

What REST asks of a station (RequestBatterySwap, ChangeAvailability, SetVariables) is a row
and a NOTIFY; every process LISTENs, and the one holding the station sends the CALL from the
connection's outbox task and stores the answer (docs/ocpp.md).
"""

import asyncio
import base64
import binascii
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
import psycopg
from fastapi import APIRouter, WebSocket
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from app.core.config import get_settings
from app.core.db import get_session_factory
from app.core.metrics import (
    OCPP_CALLERRORS,
    OCPP_CONNECTED,
    OCPP_EVENTS,
    OCPP_MESSAGES,
    OCPP_REFUSED,
    OCPP_SWAP_SECONDS,
    SWAPS,
)
from app.ingest import ocpp_meter_values as metering
from app.models.base import utcnow
from app.ocpp import frames, service
from app.ocpp.frames import Call, CallError, Reply
from app.ocpp.service import BatteryReport, StationRef, SwapOutOfOrder
from devices.ocpp import VENDOR_ID

logger = logging.getLogger(__name__)

router = APIRouter()

R = TypeVar("R")

# This process, among all gateway processes: the owner of its leases.
INSTANCE_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# At most as many units of work at once as the session pool keeps connections: more would
# open and close an overflow connection each (measured: the largest cost after schema
# validation under the 1,000-station benchmark), and wait for the database all the same.
# The others wait here, on the event loop, which costs nothing.
_db_limiters: dict[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = {}


def _db_limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    limiter = _db_limiters.get(loop)
    if limiter is None:
        limiter = _db_limiters[loop] = anyio.CapacityLimiter(get_settings().db_pool_size)
    return limiter


async def in_unit_of_work(fn: Callable[..., R], *args: Any) -> R:
    """fn(session, *args) in one transaction, in a worker thread; committed when it returns."""

    def run() -> R:
        with get_session_factory().begin() as session:
            return fn(session, *args)

    return await anyio.to_thread.run_sync(run, limiter=_db_limiter())


# ---- the handshake ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    reason: str  # the metric's label
    status: int
    detail: str


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _check_transport(websocket: WebSocket) -> Refusal | None:
    # Security profile 1 (Basic auth over plain ws://) outside production only; in production
    # TLS is required (profile 2), at uvicorn or at a proxy it trusts (X-Forwarded-Proto).
    if get_settings().environment == "production" and websocket.url.scheme != "wss":
        return Refusal("plain_ws", 403, "OCPP needs TLS (wss://) in production")
    offered = websocket.scope.get("subprotocols", [])
    if frames.SUBPROTOCOL not in offered:
        return Refusal("subprotocol", 400, f"this endpoint speaks {frames.SUBPROTOCOL} only")
    return None


def _authenticate(session: Session, station_code: str, header: str | None) -> StationRef | Refusal:
    credentials = basic_credentials(header)
    if credentials is None:
        return Refusal("no_credentials", 401, "HTTP Basic credentials required")
    username, password = credentials
    if username != station_code:
        # OCPP: the username is the station's identity, the last part of its URL.
        return Refusal("other_station", 403, "the credentials are another station's")
    station = service.authenticate(session, station_code, password)
    if station is None:
        # One answer for both, so that the endpoint does not tell which codes exist.
        known = service.has_credential(session, station_code)
        return Refusal("wrong_password" if known else "unknown_station", 401, "not authorized")
    return station


async def _refuse(websocket: WebSocket, refusal: Refusal, station_code: str) -> None:
    OCPP_REFUSED.labels(refusal.reason).inc()
    logger.warning(
        "event=ocpp_refused station=%s reason=%s client=%s",
        station_code[:64],
        refusal.reason,
        websocket.client.host if websocket.client else "-",
    )
    headers = {"WWW-Authenticate": 'Basic realm="ocpp"'} if refusal.status == 401 else None
    response = Response(refusal.detail, status_code=refusal.status, headers=headers)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008, reason=refusal.reason)


@router.websocket("/ocpp/{station_code}")
async def ocpp_endpoint(websocket: WebSocket, station_code: str) -> None:
    refusal = _check_transport(websocket)
    if refusal is not None:
        await _refuse(websocket, refusal, station_code)
        return
    authenticated = await in_unit_of_work(
        _authenticate, station_code, websocket.headers.get("authorization")
    )
    if isinstance(authenticated, Refusal):
        await _refuse(websocket, authenticated, station_code)
        return
    station = authenticated
    settings = get_settings()
    leased = await in_unit_of_work(
        service.acquire_lease, station.id, INSTANCE_ID, settings.ocpp_lease_s
    )
    if not leased:
        await _refuse(
            websocket, Refusal("already_connected", 409, "the station is connected"), station_code
        )
        return
    leases.hold(station.id)
    connection = StationConnection(websocket, station)
    try:
        await websocket.accept(subprotocol=frames.SUBPROTOCOL)
        OCPP_CONNECTED.inc()
        logger.info("event=ocpp_connected station=%s instance=%s", station.code, INSTANCE_ID)
        connections[station.id] = connection
        swap_requests.ensure_listening()
        connection.start_outbox()
        await connection.serve()
    finally:
        connections.pop(station.id, None)
        OCPP_CONNECTED.dec()
        leases.drop(station.id)
        await connection.close()
        await in_unit_of_work(_disconnected, station.id)
        logger.info("event=ocpp_disconnected station=%s", station.code)


def _disconnected(session: Session, station_id: int) -> None:
    service.release_lease(session, station_id, INSTANCE_ID)
    service.set_online(session, station_id, online=False, seen=utcnow())


# ---- leases --------------------------------------------------------------------------------------


class Leases:
    """Renews this process's leases while it holds any: one UPDATE per period."""

    def __init__(self) -> None:
        self._held: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def hold(self, station_id: int) -> None:
        self._held.add(station_id)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew())

    def drop(self, station_id: int) -> None:
        self._held.discard(station_id)

    async def _renew(self) -> None:
        lease_s = get_settings().ocpp_lease_s
        while self._held:
            await asyncio.sleep(lease_s / 3)
            try:
                await in_unit_of_work(service.renew_leases, INSTANCE_ID, lease_s)
            except Exception:  # the database is away: retry next period, the lease has slack
                logger.exception("event=ocpp_lease_renewal_failed instance=%s", INSTANCE_ID)


leases = Leases()


# ---- one station's messages ---------------------------------------------------------------------


Handler = Callable[["StationConnection", Call], Awaitable[dict[str, Any]]]


class StationConnection:
    def __init__(self, websocket: WebSocket, station: StationRef) -> None:
        self.websocket = websocket
        self.station = station
        self.max_bytes = get_settings().ocpp_max_message_bytes
        # CALLs this gateway sent, by message id, until the station answers.
        self.waiting: dict[str, asyncio.Future[Reply]] = {}
        self.send_lock = asyncio.Lock()
        # Set when the station may have requests to send (a NOTIFY, the connection's start).
        self.wake = asyncio.Event()
        self.outbox: asyncio.Task[None] | None = None
        # transactionId -> evseId: OCPP names the EVSE in a transaction's first
        # TransactionEvent only (it may repeat it).
        self.transactions: dict[str, int] = {}

    def start_outbox(self) -> None:
        self.wake.set()
        self.outbox = asyncio.get_running_loop().create_task(self._send_swap_requests())

    async def serve(self) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            answer = await self.handle(data)
            if answer is not None:
                try:
                    await self.send(answer)
                except WebSocketDisconnect:  # the station left before its answer
                    return

    async def send(self, frame: bytes) -> None:
        async with self.send_lock:  # the message loop and the outbox share the socket
            await self.websocket.send_text(frame.decode())

    async def close(self) -> None:
        if self.outbox is not None:
            self.outbox.cancel()
            try:
                await self.outbox
            except asyncio.CancelledError:
                pass

    async def _send_swap_requests(self) -> None:
        """The outbox: what REST asked of this station (RequestBatterySwap, ChangeAvailability,
        SetVariables), one CALL at a time, each answer stored before the next is sent."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                requests = await in_unit_of_work(service.claim_swap_requests, self.station.id)
                for request_id, token in requests:
                    await self._call(
                        "RequestBatterySwap",
                        {"requestId": request_id, "idToken": {"idToken": token, "type": "Central"}},
                        partial(service.answer_swap_request, request_id=request_id),
                    )
                commands = await in_unit_of_work(service.claim_commands, self.station.id)
                for command_id, action, payload in commands:
                    await self._call(
                        action, payload, partial(service.answer_command, command_id=command_id)
                    )
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the next wake (or reconnect) retries
                logger.exception("event=ocpp_outbox_failed station=%s", self.station.code)

    async def _call(self, action: str, payload: dict[str, Any], store: Callable[..., None]) -> None:
        """Sends the CALL, waits for the answer and stores it with store(session, state=,
        info=): the answer's status lower-cased (accepted, rejected, scheduled) and its
        statusInfo, or failed."""
        message_id = uuid.uuid4().hex[:16]
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.waiting[message_id] = future
        state: str = "failed"
        info: str | None = "no answer from the station"
        try:
            await self.send(frames.call(message_id, action, payload))
            state, info = _answer(action, await asyncio.wait_for(future, timeout=CALL_TIMEOUT_S))
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # The connection closed first: recorded as failed, shielded from the cancel.
            info = "the connection closed before the station answered"
            await asyncio.shield(_store(store, state, info))
            raise
        finally:
            self.waiting.pop(message_id, None)
        await _store(store, state, info)
        logger.info(
            "event=ocpp_call station=%s action=%s payload=%s state=%s info=%r",
            self.station.code,
            action,
            orjson.dumps(payload).decode()[:200],
            state,
            info,
        )

    async def handle(self, data: str | bytes) -> bytes | None:
        size = len(data.encode()) if isinstance(data, str) else len(data)
        action = "unknown"
        message: Call | Reply | None = None
        try:
            if size > self.max_bytes:
                raise CallError(
                    "FormatViolation", f"message of {size} bytes; the limit is {self.max_bytes}"
                )
            message = frames.parse(data)
            if isinstance(message, Reply):
                # An answer to a CALL this gateway sent; anything else (a SEND, a late or
                # unknown answer) is logged and dropped: OCPP-J answers neither.
                future = self.waiting.get(message.message_id)
                if future is not None and not future.done():
                    future.set_result(message)
                else:
                    logger.info(
                        "event=ocpp_unmatched_reply station=%s id=%s",
                        self.station.code,
                        message.message_id[:36],
                    )
                return None
            if message.action in frames.known_actions():
                action = message.action
            frames.check_request(message)
            handler = HANDLERS.get(message.action)
            if handler is None:
                raise CallError(
                    "NotSupported",
                    f"{message.action} is not supported by this CSMS (docs/ocpp.md)",
                    message.message_id,
                )
            payload = await handler(self, message)
            problem = frames.schema_errors(f"{message.action}Response", payload)
            if problem is not None:  # our bug: say so rather than send an invalid answer
                raise CallError(
                    "InternalError", "the CSMS built an invalid response", message.message_id
                )
        except CallError as error:
            if action in metering.METERING_ACTIONS and isinstance(message, Call):
                # Telemetry the station sent and the CSMS refused: kept, as the ingest keeps
                # bad records, and counted in its dead-letter metric.
                try:
                    await run_in_threadpool(
                        metering.dead_letter_call,
                        self.station.code,
                        action,
                        message.payload,
                        "ocpp_schema",
                        f"{error.code}: {error.description}",
                    )
                except Exception:  # the database is away: the answer still goes out
                    logger.exception("event=ocpp_dead_letter_failed station=%s", self.station.code)
            OCPP_MESSAGES.labels(action, "callerror").inc()
            OCPP_CALLERRORS.labels(error.code).inc()
            logger.warning(
                "event=ocpp_callerror station=%s action=%s code=%s detail=%r",
                self.station.code,
                action,
                error.code,
                error.description[:200],
            )
            return frames.call_error(error)
        except Exception:
            # A database failure or a bug: the station gets an answer and may retry; the
            # connection goes on.
            logger.exception(
                "event=ocpp_internal_error station=%s action=%s", self.station.code, action
            )
            OCPP_MESSAGES.labels(action, "callerror").inc()
            OCPP_CALLERRORS.labels("InternalError").inc()
            message_id = (
                message.message_id if isinstance(message, Call) else frames.UNKNOWN_MESSAGE_ID
            )
            return frames.call_error(
                CallError("InternalError", "the CSMS failed; retry", message_id)
            )
        OCPP_MESSAGES.labels(action, "ok").inc()
        return frames.call_result(message.message_id, payload)


def _now_text() -> str:
    return utcnow().astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class CallPayload:
    message_id: str
    payload: dict[str, Any]


def _timestamp(call: Call | CallPayload, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(str(call.payload[field]).replace("Z", "+00:00"))
    except ValueError as exc:
        raise CallError(
            "PropertyConstraintViolation", f"{field}: not a date-time", call.message_id
        ) from exc
    if value.tzinfo is None:
        raise CallError("PropertyConstraintViolation", f"{field}: no time zone", call.message_id)
    return value


class SeenBatcher:
    """BootNotification and Heartbeat of every station of this process: one UPDATE for all
    that arrived while the previous one ran (a heartbeat every 30 s from 1,000 stations is
    33 transactions a second otherwise). Each is answered after the UPDATE holding it
    commits; if it fails, each fails (InternalError)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, datetime] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def seen(self, station_id: int, at: datetime) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # one batch per event loop (tests run several apps)
            self._loop, self._pending, self._waiters, self._task = loop, {}, [], None
        if station_id not in self._pending or at > self._pending[station_id]:
            self._pending[station_id] = at
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            pending, waiters = self._pending, self._waiters
            self._pending, self._waiters = {}, []
            try:
                await in_unit_of_work(service.mark_seen, pending)
            except Exception as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


seen_batcher = SeenBatcher()


async def boot_notification(conn: StationConnection, call: Call) -> dict[str, Any]:
    await seen_batcher.seen(conn.station.id, utcnow())
    station = call.payload["chargingStation"]
    logger.info(
        "event=ocpp_boot station=%s reason=%s vendor=%r model=%r firmware=%r",
        conn.station.code,
        call.payload["reason"],
        station.get("vendorName"),
        station.get("model"),
        station.get("firmwareVersion"),
    )
    return {
        "currentTime": _now_text(),
        "interval": get_settings().ocpp_heartbeat_interval_s,
        "status": "Accepted",
    }


async def heartbeat(conn: StationConnection, call: Call) -> dict[str, Any]:
    await seen_batcher.seen(conn.station.id, utcnow())
    return {"currentTime": _now_text()}


async def status_notification(conn: StationConnection, call: Call) -> dict[str, Any]:
    at = _timestamp(call, "timestamp")
    evse_id = int(call.payload["evseId"])
    known = await in_unit_of_work(
        service.set_connector_status,
        conn.station.id,
        evse_id,
        call.payload["connectorStatus"],
        at,
    )
    if not known:
        raise CallError(
            "PropertyConstraintViolation",
            f"evseId: station {conn.station.code} has no slot {evse_id}",
            call.message_id,
        )
    return {}


# The values of the standard AvailabilityState variable, StatusNotification's connectorStatus.
AVAILABILITY_STATES = frozenset({"Available", "Occupied", "Reserved", "Unavailable", "Faulted"})


async def notify_event(conn: StationConnection, call: Call) -> dict[str, Any]:
    """A slot's state from the standard variables of components on its EVSE: AvailabilityState
    as StatusNotification's connectorStatus, Problem as the slot's open fault. Other events
    (station-level components, monitoring of other variables) are acknowledged and counted,
    not stored: a NotifyEvent cannot be refused, and one CALLERROR would lose its other
    entries."""
    availability: list[tuple[int, str, datetime]] = []
    problems: list[service.SlotProblem] = []
    ignored = 0
    for entry in call.payload["eventData"]:
        evse = entry["component"].get("evse")
        variable = entry["variable"]["name"]
        value = entry["actualValue"]
        is_availability = variable == "AvailabilityState" and value in AVAILABILITY_STATES
        if evse is None or not (is_availability or variable == "Problem"):
            ignored += 1
            continue
        at = _timestamp(CallPayload(call.message_id, entry), "timestamp")
        if is_availability:
            availability.append((int(evse["id"]), value, at))
        else:
            raised = value.strip().lower() == "true" and not entry.get("cleared", False)
            code = entry.get("techCode") or entry["component"]["name"]
            problems.append(
                service.SlotProblem(
                    int(evse["id"]), code if raised else None, entry.get("techInfo"), at
                )
            )

    def apply(session: Session) -> tuple[int, int]:
        """How many of each kind were about a slot the station has."""
        station_id = conn.station.id
        slots = sum(
            service.set_connector_status(session, station_id, evse_id, status, at)
            for evse_id, status, at in availability
        )
        faults = sum(service.report_problem(session, station_id, p) for p in problems)
        return slots, faults

    slots, faults = await in_unit_of_work(apply) if availability or problems else (0, 0)
    unknown = len(availability) - slots + len(problems) - faults
    OCPP_EVENTS.labels("availability").inc(slots)
    OCPP_EVENTS.labels("problem").inc(faults)
    OCPP_EVENTS.labels("ignored").inc(ignored + unknown)
    if unknown:
        logger.warning(
            "event=ocpp_event_unknown_slot station=%s entries=%s", conn.station.code, unknown
        )
    return {}


async def authorize(conn: StationConnection, call: Call) -> dict[str, Any]:
    token = call.payload["idToken"]["idToken"]
    vehicle = await in_unit_of_work(service.vehicle_for_token, token)
    return {"idTokenInfo": {"status": "Accepted" if vehicle is not None else "Unknown"}}


def _event_time(call: Call) -> datetime | None:
    """When a BatterySwap event happened, if the station says so in swapfleet's customData
    (devices/ocpp.py): OCPP's BatterySwap carries no time. Not later than now, give or take
    the skew the ingest allows device clocks."""
    custom = call.payload.get("customData") or {}
    if custom.get("vendorId") != VENDOR_ID or "timestamp" not in custom:
        return None
    at = _timestamp(CallPayload(call.message_id, custom), "timestamp")
    skew = timedelta(seconds=get_settings().ingest_max_future_skew_s)
    if at > utcnow() + skew:
        raise CallError(
            "PropertyConstraintViolation",
            f"customData.timestamp: {custom['timestamp']} is in the future",
            call.message_id,
        )
    return at


async def battery_swap(conn: StationConnection, call: Call) -> dict[str, Any]:
    payload = call.payload
    if len(payload["batteryData"]) != 1:
        raise CallError(
            "PropertyConstraintViolation",
            "batteryData: one battery per event (multi-pack vehicles are not supported yet)",
            call.message_id,
        )
    data = payload["batteryData"][0]
    battery = BatteryReport(
        evse_id=int(data["evseId"]),
        serial=data["serialNumber"],
        soc_pct=float(data["soC"]),
        soh_pct=float(data["soH"]),
    )
    request_id = int(payload["requestId"])
    event = payload["eventType"]
    at = _event_time(call)
    try:
        if event == "BatteryIn":
            await in_unit_of_work(
                service.battery_in,
                conn.station,
                request_id,
                payload["idToken"]["idToken"],
                battery,
                at,
            )
            logger.info(
                "event=ocpp_battery_in station=%s request_id=%s serial=%s slot=%s",
                conn.station.code,
                request_id,
                battery.serial,
                battery.evse_id,
            )
            return {}
        if event == "BatteryOut":
            report = await in_unit_of_work(
                service.battery_out, conn.station, request_id, battery, at
            )
        else:
            report = await in_unit_of_work(
                service.battery_out_timeout, conn.station, request_id, at
            )
    except SwapOutOfOrder as exc:
        raise CallError(
            "PropertyConstraintViolation", f"requestId: {exc}", call.message_id
        ) from exc
    if report.in_at is not None:
        if at is None:  # the latency of events the station reports as they happen
            OCPP_SWAP_SECONDS.observe(max(0.0, (utcnow() - report.in_at).total_seconds()))
        if report.outcome in ("completed", "rejected", "aborted"):
            SWAPS.labels(report.outcome, report.reason_code or "none").inc()
    logger.info(
        "event=ocpp_swap_closed station=%s request_id=%s event_type=%s swap_id=%s outcome=%s "
        "exceptions=%s",
        conn.station.code,
        request_id,
        event,
        report.swap_id,
        report.outcome,
        ",".join(report.exceptions) or "-",
    )
    return {}


async def _store_meter_values(
    conn: StationConnection, call: Call, evse_id: int, payload: dict[str, Any]
) -> None:
    # Batched with the other stations' meter values (app/ingest/ocpp_meter_values.py
    # MeterValuesBatcher); returns once the batch holding it is committed.
    await metering.meter_batcher.store(
        metering.MeterValuesCall(
            conn.station.id, conn.station.code, call.action, evse_id, payload, utcnow()
        )
    )


async def transaction_event(conn: StationConnection, call: Call) -> dict[str, Any]:
    # A slot's charging session is a transaction; its meter values are the samples. The
    # answer is always {} once the message is valid: OCPP has the station retry a
    # TransactionEvent until it is answered, so one the CSMS cannot use is dead-lettered
    # and answered, never left to be resent forever.
    payload = call.payload
    transaction_id = str(payload["transactionInfo"]["transactionId"])
    evse = payload.get("evse")
    if evse is not None:
        conn.transactions[transaction_id] = int(evse["id"])
    evse_id = conn.transactions.get(transaction_id)
    if payload["eventType"] == "Ended":
        conn.transactions.pop(transaction_id, None)
    if not payload.get("meterValue"):
        return {}
    if evse_id is None:
        await run_in_threadpool(
            metering.dead_letter_call,
            conn.station.code,
            call.action,
            payload,
            "ocpp_mapping",
            f"transaction {transaction_id[:36]}: no evse named on this connection",
        )
        return {}
    await _store_meter_values(conn, call, evse_id, payload)
    return {}


async def meter_values(conn: StationConnection, call: Call) -> dict[str, Any]:
    await _store_meter_values(conn, call, int(call.payload["evseId"]), call.payload)
    return {}


HANDLERS: dict[str, Handler] = {
    "TransactionEvent": transaction_event,
    "MeterValues": meter_values,
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "NotifyEvent": notify_event,
    "Authorize": authorize,
    "BatterySwap": battery_swap,
}


# ---- CALLs to stations: RequestBatterySwap, ChangeAvailability, SetVariables ---------------

# How long the gateway waits for the station's answer to a CALL it sent.
CALL_TIMEOUT_S = 30.0

# The stations connected to this process, by station id.
connections: dict[int, StationConnection] = {}


async def _store(store: Callable[..., None], state: str, info: str | None) -> None:
    def run(session: Session) -> None:
        store(session, state=state, info=info)

    await in_unit_of_work(run)


def _answer(action: str, reply: Reply) -> tuple[str, str | None]:
    if reply.error_code is not None:
        return "failed", f"CALLERROR {reply.error_code}"
    assert reply.payload is not None
    problem = frames.schema_errors(f"{action}Response", reply.payload)
    if problem is not None:
        return "failed", f"invalid answer: {problem}"
    if action == "SetVariables":
        statuses = [r["attributeStatus"] for r in reply.payload["setVariableResult"]]
        # RebootRequired: set, in effect after the station's next reboot.
        done = all(s in ("Accepted", "RebootRequired") for s in statuses)
        return ("accepted" if done else "rejected"), ",".join(statuses)
    info = reply.payload.get("statusInfo")
    text = None
    if info is not None:
        text = " ".join(str(p) for p in (info["reasonCode"], info.get("additionalInfo")) if p)
    return str(reply.payload["status"]).lower(), text


class SwapRequestListener:
    """LISTENs for new swap requests on one connection of this process and wakes the
    connection of the station a notification names, if this process holds it. On every
    (re)connect of the listener all its stations look, so a notification missed while it was
    away is not lost; requests for a station connected nowhere wait for its connection."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def ensure_listening(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        url = get_settings().sqlalchemy_url().replace("postgresql+psycopg://", "postgresql://", 1)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {service.SWAP_REQUEST_CHANNEL}")
                    for held in list(connections.values()):
                        held.wake.set()
                    async for notify in conn.notifies():
                        named = connections.get(int(notify.payload))
                        if named is not None:
                            named.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event=ocpp_listener_failed instance=%s", INSTANCE_ID)
                await asyncio.sleep(1.0)


swap_requests = SwapRequestListener()
