"""The real backend behind the fleet's sinks: REST registration and swaps, MQTT telemetry.

Telemetry goes out through SharedMqttSink (one MQTT connection for the whole fleet; the
default) or MqttDeviceSink (a `devices.client.DeviceClient` per station and vehicle, as real
equipment has; small fleets only). Swaps go through `devices.rest.SwapApiClient`, which
retries safely under an Idempotency-Key; the fleet then installs whatever battery the backend
says it installed. Registration reuses whatever a previous run registered.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.client import (
    PUBLISH_QUEUED,
    BrokerSettings,
    DeviceClient,
    PublishOptions,
    PublishStalled,
    PublishWindow,
)
from devices.contract import (
    DEFAULT_TOPIC_PREFIX,
    MAX_RECORDS_PER_MESSAGE,
    RecordKind,
    station_topic,
    vehicle_topic,
)
from devices.rest import SwapApiClient, SwapDeliveryError, SwapResult
from simulators.catalog import BatteryEntry, FleetManifest
from simulators.sinks import Record, SwapRequest

log = logging.getLogger(__name__)


class RegistrationError(RuntimeError):
    pass


# The problem codes that mean "a resource with this code already exists".
EXISTS_CODES = frozenset(
    {
        "OrganizationExists",
        "PackTypeExists",
        "VehicleModelExists",
        "StationExists",
        "VehicleExists",
        "BatterySerialTaken",
    }
)


@dataclass
class RegistrationReport:
    created: int = 0
    existing: int = 0
    # Where the backend has each of the fleet's batteries that were there already: a
    # simulator restarted on the same database continues from the backend's custody.
    battery_locations: dict[str, dict[str, Any]] = field(default_factory=dict)
    battery_soc: dict[str, float] = field(default_factory=dict)


REGISTRATION_RETRIES = 5


class RestFleetRegistrar:
    """Creates the fleet's organizations, catalog, stations, vehicles and batteries.

    Idempotent: whatever exists already (a 409 with an "exists" code, or a battery the
    backend lists) is reused, so a second run against the same database does not fail.
    """

    def __init__(self, http: httpx.Client) -> None:
        self._http = http
        self.report = RegistrationReport()

    def _post(self, path: str, body: dict[str, Any], *, tolerate_exists: bool = True) -> None:
        response = self._http.post(path, json=body)
        # A 503 stored nothing (the API commits before it answers): the same request again is
        # safe, and one that did commit before its answer was lost comes back as "exists".
        for _ in range(REGISTRATION_RETRIES):
            if response.status_code != 503:
                break
            retry_after = response.headers.get("Retry-After", "1")
            time.sleep(float(retry_after) if retry_after.isdigit() else 1.0)
            response = self._http.post(path, json=body)
        if response.status_code in (200, 201):
            self.report.created += 1
            return
        if (
            response.status_code == 409
            and tolerate_exists
            and _problem_code(response) in (EXISTS_CODES)
        ):
            self.report.existing += 1
            return
        raise RegistrationError(
            f"POST {path} failed with {response.status_code}: {response.text[:500]}"
        )

    def existing_batteries(self, owner_code: str) -> list[dict[str, Any]]:
        """Every battery the backend lists for the owner, all pages."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"owner_code": owner_code, "limit": 500}
            if cursor:
                params["cursor"] = cursor
            response = self._http.get("/v1/batteries", params=params)
            if response.status_code != 200:
                raise RegistrationError(
                    f"GET /v1/batteries failed with {response.status_code}: {response.text[:500]}"
                )
            page = response.json()
            found.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def register(self, manifest: FleetManifest) -> RegistrationReport:
        known: dict[str, dict[str, Any]] = {}
        owners = sorted({b.owner_code for b in manifest.batteries})
        if owners and self._http.get(f"/v1/organizations/{owners[0]}").status_code == 200:
            for owner in owners:
                for item in self.existing_batteries(owner):
                    known[item["serial"]] = item
        for org in manifest.organizations:
            self._post(
                "/v1/organizations",
                {"code": org.code, "name": org.name, "role": org.role},
            )
        for pack in manifest.pack_types:
            self._post(
                "/v1/pack-types",
                {
                    "code": pack.code,
                    "name": pack.name,
                    "chemistry": pack.chemistry,
                    "nominal_energy_kwh": pack.nominal_energy_kwh,
                    "nominal_capacity_ah": pack.nominal_capacity_ah,
                    "nominal_voltage_v": pack.nominal_voltage_v,
                },
            )
        for model in manifest.vehicle_models:
            self._post(
                "/v1/vehicle-models",
                {
                    "code": model.code,
                    "name": model.name,
                    "oem_code": model.oem_code,
                    "pack_type_codes": list(model.pack_type_codes),
                },
            )
        for station in manifest.stations:
            self._post(
                "/v1/stations",
                {
                    "code": station.code,
                    "name": station.name,
                    "operator_code": station.operator_code,
                    "latitude": station.latitude,
                    "longitude": station.longitude,
                    "timezone": station.timezone,
                    "target_soc_pct": station.target_soc_pct,
                    "slot_count": station.slot_count,
                },
            )
        for vehicle in manifest.vehicles:
            self._post(
                "/v1/vehicles",
                {"vin": vehicle.vin, "model_code": vehicle.model_code},
            )
        for battery in manifest.batteries:
            listed = known.get(battery.serial)
            if listed is None:
                self._post("/v1/batteries", battery_body(battery))
                continue
            self.report.existing += 1
            self.report.battery_locations[battery.serial] = listed["location"]
            if listed.get("soc_pct") is not None:
                self.report.battery_soc[battery.serial] = float(listed["soc_pct"])
        return self.report


def _problem_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def battery_body(battery: BatteryEntry) -> dict[str, Any]:
    location: dict[str, Any]
    if battery.vin is not None:
        location = {"kind": "vehicle", "vin": battery.vin}
    elif battery.station_code is not None and battery.slot_number is not None:
        location = {
            "kind": "slot",
            "station_code": battery.station_code,
            "slot_number": battery.slot_number,
        }
    else:
        location = {"kind": "warehouse"}
    return {
        "serial": battery.serial,
        "pack_type_code": battery.pack_type_code,
        "owner_code": battery.owner_code,
        "oem_code": battery.oem_code,
        "manufactured_on": battery.manufactured_on,
        "location": location,
        "soc_pct": battery.soc_pct,
        "soh_pct": battery.soh_pct,
        "equivalent_full_cycles": battery.equivalent_full_cycles,
        "energy_throughput_kwh": battery.energy_throughput_kwh,
        "capacity_throughput_ah": battery.capacity_throughput_ah,
    }


class RestSwapRecorder:
    """Records each swap with POST /v1/swaps; by default the backend picks the battery."""

    def __init__(self, client: SwapApiClient, *, let_backend_choose: bool = True) -> None:
        self._client = client
        self._let_backend_choose = let_backend_choose

    def record_swap(self, request: SwapRequest) -> SwapResult:
        body: dict[str, Any] = {
            "station_code": request.station_code,
            "vin": request.vin,
            "removed_battery_serial": request.removed_battery_serial,
            "removed_soc_pct": request.removed_soc_pct,
            "removed_soh_pct": request.removed_soh_pct,
            "started_at": request.started_at,
            "finished_at": request.finished_at,
        }
        if not self._let_backend_choose:
            body["installed_battery_serial"] = request.proposed_battery_serial
            body["installed_soc_pct"] = request.installed_soc_pct
            body["installed_soh_pct"] = request.installed_soh_pct
        try:
            result = self._client.record_swap(body, idempotency_key=request.idempotency_key)
        except SwapDeliveryError as exc:
            log.error("event=swap_undelivered key=%s error=%s", exc.idempotency_key, exc)
            return SwapResult(
                False,
                reason_code="Undelivered",
                idempotency_key=exc.idempotency_key,
                attempts=exc.attempts,
            )
        if not result.accepted:
            if result.reason_code is None:
                return replace(result, reason_code=f"HTTP{result.status_code}")
            return result
        if result.installed_battery_serial is None:
            # An answer that names no battery installed the one the station proposed.
            return replace(result, installed_battery_serial=request.proposed_battery_serial)
        return result


class TooManyDeviceClients(RuntimeError):
    pass


class MqttDeviceSink:
    """One DeviceClient per station and vehicle, opened on its first message.

    Realistic (each device has its own connection, outbox and Last Will) but only for small
    fleets: every client costs two threads and about six file descriptors, and paho's network
    loop uses select(), which cannot watch a descriptor numbered 1024 or more; past about 150
    clients in one process the newest ones silently never connect. SharedMqttSink is the one
    for full-size fleets.
    """

    MAX_CLIENTS = 150

    def __init__(
        self,
        broker: BrokerSettings,
        *,
        outbox_dir: Path | None = None,
        prefix: str = DEFAULT_TOPIC_PREFIX,
        options: PublishOptions | None = None,
        buffer_records: int = 200,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._broker = broker
        self._max_clients = max_clients
        # Each hand-over to a client is one outbox transaction: give it records in bulk.
        self._buffer_records = buffer_records
        self._buffers: dict[tuple[bool, str, RecordKind], list[Record]] = {}
        self._prefix = prefix
        self._options = options or PublishOptions()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if outbox_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="swapfleet-sim-outbox-")
            outbox_dir = Path(self._tmp.name)
        outbox_dir.mkdir(parents=True, exist_ok=True)
        self._outbox_dir = outbox_dir
        self._clients: dict[tuple[bool, str], DeviceClient] = {}

    def _client(self, station: bool, identity: str) -> DeviceClient:
        key = (station, identity)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= self._max_clients:
                raise TooManyDeviceClients(
                    f"more than {self._max_clients} device connections in one process; "
                    "use SharedMqttSink (one connection for the whole fleet)"
                )
            factory = DeviceClient.for_station if station else DeviceClient.for_vehicle
            client = factory(
                identity,
                self._broker,
                outbox_path=self._outbox_dir / f"{'st' if station else 've'}-{identity}.sqlite",
                prefix=self._prefix,
                options=self._options,
            )
            client.start()
            self._clients[key] = client
        return client

    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        if kind is RecordKind.status:
            for record in records:
                self._client(True, identity).publish_status(record)
            return
        key = (kind is not RecordKind.vehicle, identity, kind)
        buffer = self._buffers.setdefault(key, [])
        buffer.extend(records)
        if len(buffer) >= self._buffer_records:
            self._hand_over(key)

    def _hand_over(self, key: tuple[bool, str, RecordKind]) -> None:
        records = self._buffers.pop(key, None)
        if records:
            station, identity, kind = key
            self._client(station, identity).publish_records(kind, records)

    def flush_buffers(self) -> None:
        """Hand every buffered record to its client; call it now and then on paced runs."""
        for key in list(self._buffers):
            self._hand_over(key)

    def pending_records(self) -> int:
        buffered = sum(len(b) for b in self._buffers.values())
        return buffered + sum(c.stats().pending_records for c in self._clients.values())

    def flush(self, timeout: float) -> bool:
        self.flush_buffers()
        return all(c.flush(timeout) for c in self._clients.values())

    def close(self, timeout: float = 30.0) -> bool:
        """Flush and close every client at once, so the whole takes at most about timeout."""
        self.flush_buffers()
        clients = list(self._clients.values())
        self._clients.clear()
        flushed = True
        if clients:
            with ThreadPoolExecutor(max_workers=len(clients)) as pool:
                flushed = all(pool.map(lambda c: c.flush(timeout), clients))
                # Flushed in parallel above; close() now only disconnects.
                all(pool.map(lambda c: c.close(1.0), clients))
        if self._tmp is not None:
            self._tmp.cleanup()
        return flushed

    @property
    def clients(self) -> int:
        return len(self._clients)


@dataclass
class SharedSinkStats:
    messages_published: int = 0
    messages_acked: int = 0
    messages_rejected: int = 0
    bytes_published: int = 0
    # Station statuses replaced by a newer one of the same station before they were sent.
    statuses_superseded: int = 0
    records_published: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def unacked(self) -> int:
        return self.messages_published - self.messages_acked - self.messages_rejected


class SharedMqttSink:
    """One MQTT connection that publishes for every simulated station and vehicle.

    Real equipment has a connection each (MqttDeviceSink does that), but hundreds of paho
    clients in one process cost a thread and an outbox each and made a full-size run crawl;
    a simulator only needs the records on the right topics. On a broker with per-device ACLs
    this connection needs a credential allowed to publish on every device topic (an admin or
    simulator account). Records are grouped per topic into messages of up to batch_records;
    the number of messages awaiting PUBACK is bounded by the device client's flow control
    (devices.client.PublishWindow: paho's in-flight window, honouring the broker's Receive
    Maximum, plus a queue behind it), so memory stays flat and the producer slows down to the
    broker's pace instead of piling up. Station status is state: published retained at once,
    and each station is marked offline on close (one connection cannot carry a Last Will per
    station).
    """

    def __init__(
        self,
        broker: BrokerSettings,
        *,
        prefix: str = DEFAULT_TOPIC_PREFIX,
        batch_records: int = 500,
        max_unacked_messages: int = 200,
        inflight_window: int = 20,
        client_id: str | None = None,
        stall_timeout_s: float = 120.0,
        status_min_interval_s: float = 1.0,
    ) -> None:
        if not 1 <= batch_records <= MAX_RECORDS_PER_MESSAGE:
            raise ValueError(f"batch_records must be within 1..{MAX_RECORDS_PER_MESSAGE}")
        self._broker = broker
        self._prefix = prefix
        self._batch_records = batch_records
        self._window = PublishWindow(inflight_window, max_unacked_messages)
        self._stall_timeout_s = stall_timeout_s
        # Records wait encoded: hundreds of thousands of live dicts would make every garbage
        # collection pass walk them all.
        self._buffers: dict[str, list[bytes]] = {}
        self._topics: dict[tuple[RecordKind, str], str] = {}
        self._stations: set[str] = set()
        self._status_min_interval_s = status_min_interval_s
        self._status_sent_at: dict[str, float] = {}
        self._status_pending: dict[str, Record] = {}
        self._connected = threading.Event()
        self._refused: str | None = None
        self._bytes_published = 0
        self._statuses_superseded = 0
        self._records_published: dict[str, int] = defaultdict(int)
        self._mqtt = broker.new_client(client_id or f"swapfleet-sim-{uuid.uuid4().hex[:12]}")
        broker.configure(self._mqtt)
        # 20, the default, is Mosquitto's default Receive Maximum.
        self._window.configure(self._mqtt)
        # Unbounded in paho; bounded by the window's max_unacked, where the producer can wait.
        self._mqtt.max_queued_messages_set(0)
        self._mqtt.reconnect_delay_set(1, 30)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_publish = self._on_publish
        self._started = False
        self._closing = False

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> SharedMqttSink:
        """Connect; raises if the broker cannot be reached or refuses within timeout."""
        if self._started:
            return self
        self._started = True
        self._broker.connect_async(self._mqtt)
        self._mqtt.loop_start()
        if not self._connected.wait(timeout):
            self._mqtt.loop_stop()
            reason = self._refused or "no answer"
            raise ConnectionError(
                f"MQTT broker {self._broker.host}:{self._broker.port} not connected: {reason}"
            )
        return self

    def close(self, timeout: float = 60.0) -> bool:
        """Publish what is buffered, mark stations offline, wait for every PUBACK; True if all
        were acknowledged within timeout. Never waits longer than timeout."""
        if not self._started:
            return self._window.unacked == 0
        deadline = time.monotonic() + timeout
        complete = False
        try:
            self.flush_buffers(deadline=deadline)
            offline_ts = datetime.now(UTC).isoformat()
            for code in sorted(self._stations):
                self._send(
                    station_topic(code, RecordKind.status, self._prefix),
                    orjson.dumps({"online": False, "ts": offline_ts}),
                    retain=True,
                    deadline=deadline,
                )
            complete = self.wait_acked(max(0.0, deadline - time.monotonic()))
        except PublishStalled as exc:
            log.error("event=sim_publish_incomplete error=%s", exc)
        finally:
            self._closing = True
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
            self._started = False
        if not complete:
            log.error("event=sim_publish_incomplete unacked_messages=%d", self._window.unacked)
        return complete

    def __enter__(self) -> SharedMqttSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the RecordSink protocol -------------------------------------------------------------

    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        key = (kind, identity)
        topic = self._topics.get(key)
        if topic is None:
            if kind is RecordKind.vehicle:
                topic = vehicle_topic(identity, self._prefix)
            else:
                topic = station_topic(identity, kind, self._prefix)
                self._stations.add(identity)
            self._topics[key] = topic
        if kind is RecordKind.status:
            self._publish_status(topic, records)
            return
        buffer = self._buffers.get(topic)
        if buffer is None:
            buffer = self._buffers[topic] = []
        buffer.extend(map(orjson.dumps, records))
        if len(buffer) >= self._batch_records:
            self._send_buffer(topic, kind)

    def flush_buffers(self, *, deadline: float | None = None) -> None:
        """Publish every partly filled batch and held-back status; paced runs call it now
        and then."""
        for topic in list(self._buffers):
            self._send_buffer(topic, None, deadline=deadline)
        for topic in list(self._status_pending):
            self._send_status(topic, self._status_pending.pop(topic), deadline=deadline)

    def _publish_status(self, topic: str, records: Sequence[Record]) -> None:
        # Status is retained state and only the latest counts. Flat out, a station's
        # five-minute heartbeats come thousands of times a second: send at most one per
        # status_min_interval_s, the latest, and hold the rest back for flush_buffers().
        if topic in self._status_pending:
            self._statuses_superseded += 1
        self._statuses_superseded += len(records) - 1
        latest = records[-1]
        now = time.monotonic()
        if now - self._status_sent_at.get(topic, -math.inf) >= self._status_min_interval_s:
            self._status_pending.pop(topic, None)
            self._send_status(topic, latest)
        else:
            self._status_pending[topic] = latest

    def _send_status(self, topic: str, status: Record, *, deadline: float | None = None) -> None:
        self._status_sent_at[topic] = time.monotonic()
        self._send(topic, orjson.dumps(status), retain=True, deadline=deadline)
        self._records_published[RecordKind.status.value] += 1

    def wait_acked(self, timeout: float) -> bool:
        return self._window.wait_acked(timeout)

    @property
    def stats(self) -> SharedSinkStats:
        """A snapshot of what was published and acknowledged so far."""
        window = self._window
        return SharedSinkStats(
            messages_published=window.handed,
            messages_acked=window.acked,
            messages_rejected=window.rejected,
            bytes_published=self._bytes_published,
            statuses_superseded=self._statuses_superseded,
            records_published=defaultdict(int, self._records_published),
        )

    def pending_records(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- sending -----------------------------------------------------------------------------

    def _send_buffer(
        self, topic: str, kind: RecordKind | None, *, deadline: float | None = None
    ) -> None:
        records = self._buffers.pop(topic, None)
        if not records:
            return
        if kind is None:
            kind = _kind_of_topic(topic)
        for start in range(0, len(records), self._batch_records):
            chunk = records[start : start + self._batch_records]
            # The contract's shapes: a bare record alone, {"records": [...]} for several.
            payload = chunk[0] if len(chunk) == 1 else b'{"records":[' + b",".join(chunk) + b"]}"
            self._send(topic, payload, retain=False, deadline=deadline)
            self._records_published[kind.value] += len(chunk)

    def _send(
        self, topic: str, payload: bytes, *, retain: bool, deadline: float | None = None
    ) -> None:
        if not self._started:
            raise RuntimeError("SharedMqttSink.start() was not called")
        self._window.wait_for_room(stall_timeout_s=self._stall_timeout_s, deadline=deadline)
        self._window.handed_over()
        # Never called holding the window's lock: paho calls on_publish holding its own.
        info = self._mqtt.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in PUBLISH_QUEUED:
            self._window.withdrawn()
            raise RuntimeError(f"paho refused a publish on {topic}: {mqtt.error_string(info.rc)}")
        self._bytes_published += len(payload)

    # ---- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.warning("event=sim_mqtt_connect_refused reason=%s", reason_code)
            return
        receive_maximum = self._window.connected(properties)
        log.info(
            "event=sim_mqtt_connected receive_maximum=%d unacked_limit=%d",
            receive_maximum,
            self._window.limit,
        )
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("event=sim_mqtt_disconnected reason=%s", reason_code)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("event=sim_publish_rejected mid=%d reason=%s", mid, reason_code)
        self._window.acknowledged(reason_code)


def _kind_of_topic(topic: str) -> RecordKind:
    leaf = topic.rsplit("/", 1)[-1]
    return RecordKind(leaf)
