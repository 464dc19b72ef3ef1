"""Meter values of batteries charging in slots (`TransactionEvent`, `MeterValues`), which the
OCPP gateway (app/ocpp/gateway.py) receives, become charging samples through the MQTT
ingest's own path: each sampled instant is turned into the
v1 contract's charging record, decoded by app/ingest/payloads.decode_message (validation,
ts bounds) and written by app/ingest/writer.BatchWriter (custody check, dedupe on the
natural key, dead letters, derived state). The rules stay there; this module only maps OCPP
onto the contract and names the battery in the slot.

What is OCPP's own: which battery a slot's meter measured (the one custody holds in the
slot, if it was there at the sample's time), the measurands and their units, and the
dead letters for a message that maps to no sample (reason `ocpp_mapping`) or fails the
OCPP schema (reason `ocpp_schema`).
"""

import asyncio
import dataclasses
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from app.core import metrics
from app.core.config import get_settings
from app.ingest.payloads import DecodedMessage, decode_message
from app.ingest.writer import BatchWriter, WriteResult, libpq_url
from app.models.base import utcnow
from devices.contract import RecordKind, TopicIdentity, station_topic
from devices.ocpp import VENDOR_ID

logger = logging.getLogger(__name__)

# The actions whose payloads are telemetry: a schema failure of one is dead-lettered too.
METERING_ACTIONS = frozenset({"TransactionEvent", "MeterValues"})

# Measurand -> (contract field, the unit the contract wants, factor from each OCPP unit).
_UNITS: dict[str, tuple[str, dict[str, float]]] = {
    "SoC": ("soc_pct", {"Percent": 1.0}),
    "Voltage": ("voltage_v", {"V": 1.0}),
    "Current.Import": ("current_a", {"A": 1.0}),
    "Power.Active.Import": ("power_kw", {"W": 1e-3, "kW": 1.0}),
    "Energy.Active.Import.Register": ("energy_kwh", {"Wh": 1e-3, "kWh": 1.0}),
}
# OCPP 2.1's default unitOfMeasure.unit per measurand (SampledValueType: "Wh" unless said).
_DEFAULT_UNIT = {
    "SoC": "Percent",
    "Voltage": "V",
    "Current.Import": "A",
    "Power.Active.Import": "W",
    "Energy.Active.Import.Register": "Wh",
}

# OCPP 2.1 dropped the Temperature measurand (2.0.1 had it), and a charging sample needs the
# pack's lowest and highest temperature: the station sends them in the meterValue's
# customData under swapfleet's vendorId (devices/ocpp.py).
TEMPERATURE_VENDOR_ID = VENDOR_ID


class MappingError(Exception):
    """A meter value that names no charging sample; dead-lettered with this text."""


def sample_fields(meter_value: dict[str, Any]) -> dict[str, Any]:
    """One meterValue entry as the contract's charging fields (without battery and slot)."""
    found: dict[str, float] = {}
    for sampled in meter_value["sampledValue"]:
        measurand = sampled.get("measurand", "Energy.Active.Import.Register")
        if measurand not in _UNITS:
            continue  # other measurands have no place in a charging sample
        field, factors = _UNITS[measurand]
        unit_of_measure = sampled.get("unitOfMeasure", {})
        unit = unit_of_measure.get("unit", _DEFAULT_UNIT[measurand])
        if unit not in factors:
            raise MappingError(f"{measurand}: unit {unit!r} (expected one of {sorted(factors)})")
        value = float(sampled["value"]) * 10.0 ** int(unit_of_measure.get("multiplier", 0))
        found[field] = value * factors[unit]
    missing = [m for m, (f, _) in _UNITS.items() if f not in found]
    custom = meter_value.get("customData") or {}
    if custom.get("vendorId") != TEMPERATURE_VENDOR_ID or not {"tempCMin", "tempCMax"} <= set(
        custom
    ):
        missing.append(f"customData {TEMPERATURE_VENDOR_ID} tempCMin/tempCMax")
    if missing:
        raise MappingError(f"meterValue at {meter_value['timestamp']}: no {', '.join(missing)}")
    # The contract's model validates the values (types, ranges) as for an MQTT record.
    return {
        **found,
        "temp_c_min": custom["tempCMin"],
        "temp_c_max": custom["tempCMax"],
        "ts": meter_value["timestamp"],
    }


def _battery_in_slot(
    conn: Any, station_id: int, slot: int, stamps: list[datetime], grace: timedelta
) -> str:
    """The serial of the battery custody holds in the slot, refused when it arrived there
    after the oldest sample (give or take the ingest's grace): a meter value resent after a
    swap must not be given to the battery that replaced the one it measured. Registering a
    battery in a slot is not an arrival: as in the ingest, older records of it (a backfill)
    are its own."""
    row = conn.execute(
        "SELECT b.serial, (SELECT max(e.at) FROM custody_events e"
        "   WHERE e.battery_id = b.id AND e.to_slot_id = s.id AND e.from_kind IS NOT NULL)"
        " FROM slots s JOIN batteries b ON b.slot_id = s.id"
        " WHERE s.station_id = %s AND s.number = %s",
        (station_id, slot),
    ).fetchone()
    if row is None:
        raise MappingError(f"evse {slot}: no battery is in this slot")
    serial, arrived = row
    if arrived is not None and min(stamps) < arrived - grace:
        raise MappingError(
            f"evse {slot}: battery {serial} arrived at {arrived.isoformat()}, after the sample"
            f" at {min(stamps).isoformat()}"
        )
    return str(serial)


class MeterWriter:
    """The ingest's BatchWriter, a few per process (each owns a connection; not
    thread-safe), handed to the worker threads the gateway runs database work in."""

    POOL = 4

    def __init__(self) -> None:
        self._idle: queue.LifoQueue[BatchWriter] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()

    @contextmanager
    def writer(self) -> Iterator[BatchWriter]:
        try:
            writer = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self.POOL
                self._made += make
            if make:
                settings = get_settings()
                writer = BatchWriter(libpq_url(settings.sqlalchemy_url()), settings)
            else:
                writer = self._idle.get()
        try:
            yield writer
        except Exception:
            writer.close()  # a broken connection is reopened on the next write
            raise
        finally:
            self._idle.put(writer)


meter_writer = MeterWriter()


def ocpp_topic(station_code: str, action: str) -> str:
    """The `topic` of an OCPP message's dead letters (not an MQTT topic)."""
    return f"ocpp/{station_code}/{action}"


@dataclasses.dataclass(frozen=True)
class MeterValuesCall:
    """One TransactionEvent or MeterValues with meter values, for the slot it names."""

    station_id: int
    station_code: str
    action: str
    evse_id: int
    payload: dict[str, Any]
    received_at: datetime


def store_batch(calls: Sequence[MeterValuesCall]) -> WriteResult:
    """Many stations' meter values in one ingest transaction (MeterValuesBatcher): one
    custody lookup transaction and one write for the lot, instead of one of each per
    message. A batch the database refuses for another reason than being away is written
    again message by message, so that one message's fault fails only its own call."""
    with meter_writer.writer() as writer:
        messages = _decode_calls(writer, calls)
        try:
            return _write(writer, messages)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            if len(messages) == 1:
                raise
            logger.warning("event=ocpp_meter_batch_split messages=%d", len(messages))
        result = WriteResult()
        for message in messages:
            result.merge(_write(writer, [message]))
        return result


def _decode_calls(writer: BatchWriter, calls: Sequence[MeterValuesCall]) -> list[DecodedMessage]:
    """Each call as the ingest's decoded message: the contract's charging records of the
    battery in its slot, or its dead letter when it maps to none."""
    settings = get_settings()
    limit = settings.ingest_dead_letter_payload_bytes
    grace = timedelta(seconds=settings.ingest_custody_grace_s)
    decoded: list[DecodedMessage] = []
    conn = writer.connection()
    with conn.transaction():
        for call in calls:
            topic = ocpp_topic(call.station_code, call.action)
            try:
                samples = [sample_fields(mv) for mv in call.payload.get("meterValue", [])]
                if not samples:
                    continue
                stamps = [datetime.fromisoformat(s["ts"].replace("Z", "+00:00")) for s in samples]
                serial = _battery_in_slot(conn, call.station_id, call.evse_id, stamps, grace)
            except (MappingError, ValueError, TypeError) as exc:
                message = _refused(call.station_code, topic, call.payload, call.received_at)
                message.dead_letter("ocpp_mapping", str(exc), limit=limit)
                decoded.append(message)
                continue
            records = [{"battery_serial": serial, "slot": call.evse_id, **s} for s in samples]
            body = orjson.dumps({"records": records} if len(records) > 1 else records[0])
            message = decode_message(
                station_topic(call.station_code, RecordKind.charging, settings.mqtt_topic_prefix),
                body,
                settings=settings,
                received_at=call.received_at,
            )
            # Its dead letters name the OCPP message they came from, not an MQTT topic.
            message.topic = topic
            message.dead_letters = [
                dataclasses.replace(d, topic=topic) for d in message.dead_letters
            ]
            decoded.append(message)
    return decoded


class MeterValuesBatcher:
    """This process's meter values, written a batch at a time.

    Meter values are most of what a fleet of stations sends (8 charging slots every minute
    against one heartbeat every 30 s at 1,000 stations: 133 messages/s), and the ingest's
    writer costs about the same for one message as for a few hundred (registry, staging,
    derived state, commit). So each gateway handler queues its call and awaits it; a few
    writer threads (each with its own BatchWriter) take whatever has queued meanwhile, up to
    MAX_BATCH, and write it in one transaction. The answer to each call is sent only after
    the batch that holds it is committed, as for any OCPP message; a batch that fails fails
    each of its calls (InternalError: the stations send them again). The writer threads are
    not the event loop's worker threads: the other messages (swaps, heartbeats) never wait
    behind meter values for a thread."""

    MAX_BATCH = 500
    WRITERS = 2

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[MeterValuesCall, asyncio.Future[None]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(self.WRITERS, thread_name_prefix="ocpp-meter")

    async def store(self, call: MeterValuesCall) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._queue is None:
            # One queue per event loop (tests start several apps in one process).
            self._loop, self._queue = loop, asyncio.Queue()
            self._tasks = [loop.create_task(self._drain(self._queue)) for _ in range(self.WRITERS)]
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put_nowait((call, future))
        await future

    async def _drain(
        self, pending: asyncio.Queue[tuple[MeterValuesCall, asyncio.Future[None]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await pending.get()]
            while len(batch) < self.MAX_BATCH and not pending.empty():
                batch.append(pending.get_nowait())
            calls = [call for call, _ in batch]
            try:
                result = await loop.run_in_executor(self._executor, store_batch, calls)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away, or a bug: each call fails
                logger.exception("event=ocpp_meter_batch_failed messages=%d", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            _log_refusals(result)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


def _log_refusals(result: WriteResult) -> None:
    reasons: dict[str, set[str]] = {}
    for row in result.dead_letters:
        reasons.setdefault(row.topic, set()).add(row.reason)
    for topic, found in sorted(reasons.items()):
        logger.warning(
            "event=ocpp_meter_values_refused topic=%s reasons=%s", topic, ",".join(sorted(found))
        )


meter_batcher = MeterValuesBatcher()


def dead_letter_call(
    station_code: str, action: str, payload: Any, reason: str, detail: str
) -> None:
    """A telemetry CALL the gateway refused (schema): kept as the ingest keeps bad records."""
    topic = ocpp_topic(station_code, action)
    message = _refused(station_code, topic, payload, utcnow())
    message.dead_letter(reason, detail, limit=get_settings().ingest_dead_letter_payload_bytes)
    with meter_writer.writer() as writer:
        _write(writer, [message])


def _refused(station_code: str, topic: str, payload: Any, at: datetime) -> DecodedMessage:
    # The identity names the station in the dead letter; with no records the writer
    # stores only the dead letters.
    identity = TopicIdentity(kind=RecordKind.charging, station_code=station_code)
    return DecodedMessage(topic, identity, orjson.dumps(payload), at)


def _write(writer: BatchWriter, messages: Sequence[DecodedMessage]) -> WriteResult:
    if not messages:
        return WriteResult()
    result = writer.write(messages)
    # The ingest's own metrics: an OCPP sample is a charging record like an MQTT one.
    for kind, n in result.stored.items():
        metrics.INGEST_RECORDS.labels(kind.value, "stored").inc(n)
    for kind, n in result.duplicates.items():
        metrics.INGEST_RECORDS.labels(kind.value, "duplicate").inc(n)
    for row in result.dead_letters:
        metrics.INGEST_DEAD_LETTERS.labels(row.reason).inc()
    return result
