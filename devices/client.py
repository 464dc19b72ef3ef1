"""The publishing client that station and vehicle software embeds.

    client = DeviceClient.for_station("ST-001", BrokerSettings.from_url(url), outbox_path=path)
    client.start()
    client.publish_records(RecordKind.charging, samples)
    client.flush(timeout=10)
    client.close()

Every record goes through the on-disk outbox (devices.outbox) first, so `publish_records`
returns once the record is durable, whether or not the broker is reachable. A sender thread
groups records into one message per topic (by count, size and age), hands messages to paho
within a bounded in-flight window, and deletes a message only on its PUBACK. paho keeps the
messages it was given and retransmits them after a reconnect, so each outbox message is given
to paho once per process; after a restart the unacknowledged ones are given again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args
from urllib.parse import unquote, urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel

from devices.contract import (
    DEFAULT_TOPIC_PREFIX,
    IDENTIFIER_PATTERN,
    MAX_RECORDS_PER_MESSAGE,
    MqttProtocol,
    RecordKind,
    StationStatus,
    station_topic,
    vehicle_topic,
)
from devices.outbox import Outbox, SynchronousMode

log = logging.getLogger(__name__)

Record = BaseModel | Mapping[str, Any]

# The Last Will has no ts: it is composed at connect time, when any ts would be stale.
OFFLINE_WILL = b'{"online":false}'

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN.removeprefix("^").removesuffix("$"))


@dataclass(frozen=True, slots=True)
class TlsOptions:
    ca_certs: str | None = None  # None: the system's trusted CAs
    certfile: str | None = None
    keyfile: str | None = None
    # Only for test brokers with self-signed certificates: skips the hostname check.
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    keepalive_s: int = 30
    protocol: MqttProtocol = "5"

    def __post_init__(self) -> None:
        if self.protocol not in get_args(MqttProtocol):
            raise ValueError(f"unsupported MQTT protocol {self.protocol!r} (use 5 or 3.1.1)")

    @classmethod
    def from_url(
        cls, url: str, *, tls: TlsOptions | None = None, protocol: MqttProtocol = "5"
    ) -> BrokerSettings:
        """`mqtt://user:password@host:1883` or `mqtts://...` (TLS, port 8883 by default)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r}")
        secure = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if secure else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls or (TlsOptions() if secure else None),
            protocol=protocol,
        )

    def new_client(self, client_id: str) -> mqtt.Client:
        """A paho client for a publisher, in this protocol; paho's default clean session
        under MQTT 3.1.1 (see connect_async)."""
        return mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.protocol == "5" else mqtt.MQTTv311,
        )

    def connect_async(self, client: mqtt.Client) -> None:
        """Connect in the background with a fresh session: a publisher keeps nothing worth
        resuming in the broker's session; the retransmission of unacknowledged messages is
        paho's (and an outbox's) job."""
        if self.protocol == "5":
            client.connect_async(self.host, self.port, self.keepalive_s, clean_start=True)
        else:
            # MQTT 3.1.1 has no clean start: the client's clean_session (True) says the same.
            client.connect_async(self.host, self.port, self.keepalive_s)

    def configure(self, client: mqtt.Client) -> None:
        """Credentials and TLS on a paho client, before it connects."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls is not None:
            client.tls_set(
                ca_certs=self.tls.ca_certs,
                certfile=self.tls.certfile,
                keyfile=self.tls.keyfile,
            )
            client.tls_insecure_set(self.tls.insecure)


@dataclass(frozen=True, slots=True)
class PublishOptions:
    batch_max_records: int = 100
    batch_max_bytes: int = 256 * 1024
    # A record waits at most this long for companions before it is sent alone.
    batch_interval_s: float = 1.0
    # Messages given to paho and not yet acknowledged. Capped further by the broker's
    # Receive Maximum (Mosquitto's max_inflight_messages, 20 by default).
    inflight_window: int = 20
    # paho's own queue bound; beyond it publish() answers MQTT_ERR_QUEUE_SIZE. None: the
    # window plus room for status messages.
    paho_max_queued: int | None = None
    reconnect_min_delay_s: int = 1
    reconnect_max_delay_s: int = 60
    outbox_synchronous: SynchronousMode = "NORMAL"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max_records <= MAX_RECORDS_PER_MESSAGE:
            raise ValueError(f"batch_max_records must be within 1..{MAX_RECORDS_PER_MESSAGE}")
        if self.inflight_window < 1:
            raise ValueError("inflight_window must be at least 1")


# paho's answers to publish() that mean the message is queued: MQTT_ERR_NO_CONN with QoS 1
# still means "queued", and paho sends it after reconnecting.
PUBLISH_QUEUED = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)


class PublishStalled(RuntimeError):
    """The broker acknowledged nothing for too long while the window was full."""


class PublishWindow:
    """QoS 1 flow control of one paho connection: how many messages may have been handed to
    paho and not yet acknowledged.

    paho puts at most `inflight_window` messages on the wire (its max_inflight_messages) and
    queues the rest; `max_unacked` bounds the two together (by default the window itself, so
    nothing waits in paho's queue). A broker accepts at most its Receive Maximum
    unacknowledged (Mosquitto's max_inflight_messages, 20 by default) and drops a connection
    that exceeds it; paho cannot change its window once connected, so a broker announcing less
    than the window is honoured by handing paho no more than that. The publisher counts a
    message with handed_over() before publish() (its PUBACK may arrive before publish()
    returns), withdraws it if paho refuses it, and reports each PUBACK to acknowledged().
    Thread-safe.
    """

    def __init__(self, inflight_window: int, max_unacked: int | None = None) -> None:
        self.inflight_window = max(1, inflight_window)
        self.max_unacked = max(1, self.inflight_window if max_unacked is None else max_unacked)
        self._limit = self.max_unacked
        self._progress = threading.Condition()
        self.handed = 0
        self.acked = 0
        self.rejected = 0

    def configure(self, client: mqtt.Client) -> None:
        """Set paho's in-flight window, before the client connects."""
        client.max_inflight_messages_set(self.inflight_window)

    def connected(self, properties: Properties | None) -> int:
        """Apply the Receive Maximum of the broker's CONNACK; returns it (65,535, the
        protocol's maximum, when the broker announces none, as under MQTT 3.1.1)."""
        receive_maximum = int(getattr(properties, "ReceiveMaximum", 0) or 65_535)
        with self._progress:
            self._limit = (
                self.max_unacked
                if receive_maximum >= self.inflight_window
                else min(self.max_unacked, receive_maximum)
            )
        return receive_maximum

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def unacked(self) -> int:
        return self.handed - self.acked - self.rejected

    @property
    def room(self) -> int:
        with self._progress:
            return self._limit - self.unacked

    def handed_over(self) -> None:
        with self._progress:
            self.handed += 1

    def withdrawn(self) -> None:
        with self._progress:
            self.handed -= 1

    def acknowledged(self, reason_code: ReasonCode) -> None:
        """A PUBACK: a failure reason code counts as rejected (resending would be refused
        again, typically an ACL denial)."""
        with self._progress:
            if reason_code.is_failure:
                self.rejected += 1
            else:
                self.acked += 1
            self._progress.notify_all()

    def wait_for_room(self, *, stall_timeout_s: float, deadline: float | None = None) -> None:
        """Block while the window is full; raises PublishStalled when no PUBACK came for
        stall_timeout_s, or at deadline (time.monotonic())."""
        with self._progress:
            last_acked = self.acked
            stalled_since = time.monotonic()
            while self.unacked >= self._limit:
                now = time.monotonic()
                if self.acked != last_acked:
                    last_acked, stalled_since = self.acked, now
                if now - stalled_since > stall_timeout_s:
                    raise PublishStalled(
                        f"no PUBACK for {stall_timeout_s:.0f} s with "
                        f"{self.unacked} messages unacknowledged"
                    )
                if deadline is not None and now >= deadline:
                    raise PublishStalled(f"{self.unacked} messages still unacknowledged")
                self._progress.wait(0.5)

    def wait_acked(self, timeout: float) -> bool:
        """True once every message handed over was acknowledged (or rejected)."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.unacked > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.5))
        return True


@dataclass(frozen=True, slots=True)
class ClientStats:
    connected: bool
    pending_records: int
    outbox_messages: int
    inflight: int
    max_inflight_seen: int
    acked_messages: int
    rejected_messages: int
    # publish() calls paho refused (full queue and the like); each was retried later.
    publish_refusals: int


class DeviceClient:
    def __init__(
        self,
        *,
        client_id: str,
        topic_for: Callable[[RecordKind], str],
        broker: BrokerSettings,
        outbox_path: str | Path | None = None,
        options: PublishOptions | None = None,
        status_topic: str | None = None,
    ) -> None:
        self._topic_for = topic_for
        self._broker = broker
        self._options = options or PublishOptions()
        self._status_topic = status_topic
        self._outbox = Outbox(outbox_path, synchronous=self._options.outbox_synchronous)
        # Counts the outbox's messages only: a status bypasses the outbox and the window.
        self._window = PublishWindow(self._options.inflight_window)

        self._mqtt = broker.new_client(client_id)
        self._configure_mqtt()

        # Shared between the caller, paho's network thread and the sender thread.
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._progress = threading.Condition()
        # on_publish runs inside paho's message lock, so it only records the ack here and
        # never touches the outbox or anything the sender holds while calling publish().
        self._acks: deque[tuple[int, ReasonCode]] = deque()

        # Owned by the sender thread.
        self._inflight: dict[int, int] = {}  # paho mid -> outbox message id
        self._last_dispatched = 0
        self._max_inflight_seen = 0
        self._refusals = 0

        # Producers and the sealer agree on what is pending under this lock.
        self._pending_lock = threading.Lock()
        self._pending: dict[str, tuple[int, float]] = self._outbox.pending_topics()
        self._seal_everything = False

        self._status: dict[str, Any] | None = None
        self._sender = threading.Thread(target=self._run_sender, name="device-sender", daemon=True)
        self._started = False

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def for_station(
        cls,
        station_code: str,
        broker: BrokerSettings | None = None,
        *,
        outbox_path: str | Path | None = None,
        prefix: str = DEFAULT_TOPIC_PREFIX,
        options: PublishOptions | None = None,
        client_id: str | None = None,
    ) -> DeviceClient:
        _check_identifier(station_code)
        return cls(
            client_id=client_id or f"station-{station_code}",
            topic_for=lambda kind: _station_record_topic(station_code, kind, prefix),
            broker=broker or BrokerSettings(),
            outbox_path=outbox_path,
            options=options,
            status_topic=station_topic(station_code, RecordKind.status, prefix),
        )

    @classmethod
    def for_vehicle(
        cls,
        vin: str,
        broker: BrokerSettings | None = None,
        *,
        outbox_path: str | Path | None = None,
        prefix: str = DEFAULT_TOPIC_PREFIX,
        options: PublishOptions | None = None,
        client_id: str | None = None,
    ) -> DeviceClient:
        _check_identifier(vin)

        def topic_for(kind: RecordKind) -> str:
            if RecordKind(kind) is not RecordKind.vehicle:
                raise ValueError(f"a vehicle publishes only {RecordKind.vehicle.value} records")
            return vehicle_topic(vin, prefix)

        return cls(
            client_id=client_id or f"vehicle-{vin}",
            topic_for=topic_for,
            broker=broker or BrokerSettings(),
            outbox_path=outbox_path,
            options=options,
        )

    def _configure_mqtt(self) -> None:
        options = self._options
        self._broker.configure(self._mqtt)
        if self._status_topic is not None:
            self._mqtt.will_set(self._status_topic, OFFLINE_WILL, qos=1, retain=True)
        self._window.configure(self._mqtt)
        self._mqtt.max_queued_messages_set(
            options.paho_max_queued
            if options.paho_max_queued is not None
            else options.inflight_window + 4
        )
        self._mqtt.reconnect_delay_set(options.reconnect_min_delay_s, options.reconnect_max_delay_s)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_publish = self._on_publish

    # ---- public API -----------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; reconnects by itself, with backoff, until close()."""
        if self._started:
            return
        self._started = True
        self._broker.connect_async(self._mqtt)
        rc = self._mqtt.loop_start()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"paho loop_start failed: {mqtt.error_string(rc)}")
        self._sender.start()

    def publish_records(self, kind: RecordKind | str, records: Iterable[Record]) -> int:
        """Store the records durably for sending; returns how many. Never blocks on the network."""
        topic = self._topic_for(RecordKind(kind))
        payloads = [encode_record(record) for record in records]
        if not payloads:
            return 0
        wake = False
        with self._pending_lock:
            self._outbox.append(topic, payloads)
            count, oldest = self._pending.get(topic, (0, time.time()))
            count += len(payloads)
            self._pending[topic] = (count, oldest)
            # A new topic needs a deadline; a full batch can go at once. Otherwise the
            # sender's own timer is enough, and a busy producer does not wake it per record.
            wake = count == len(payloads) or count >= self._options.batch_max_records
        if wake:
            self._wakeup.set()
        return len(payloads)

    def publish_status(self, status: StationStatus | Mapping[str, Any]) -> None:
        """Publish the station's retained status now; it is republished on every reconnect.

        Status is state, not history: it bypasses the outbox, and only the latest counts.
        """
        if self._status_topic is None:
            raise ValueError("only a station publishes a status")
        document = (
            status.model_dump(mode="json", exclude_none=True)
            if isinstance(status, BaseModel)
            else dict(status)
        )
        self._status = document
        if self._connected.is_set():
            # Same shape as the status sent on connect, so the latest retained one is complete.
            self._send_status({**document, "online": True, "ts": _now_rfc3339()})

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything stored so far without waiting for batches to fill; True once acked."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pending_lock:
            self._seal_everything = True
        self._wakeup.set()
        with self._progress:
            while True:
                stats = self._outbox.stats()
                if stats.pending_records == 0 and stats.messages == 0:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(0.2 if remaining is None else min(remaining, 0.2))

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, mark the station offline, disconnect. What was not acked stays in the outbox."""
        flushed = self.flush(timeout) if self._started else False
        if self._started:
            if self._status_topic is not None and self._connected.is_set():
                offline = {"online": False, "ts": _now_rfc3339()}
                info = self._send_status(offline)
                if info is not None:
                    info.wait_for_publish(timeout=min(timeout, 5.0))
            self._stopping.set()
            self._wakeup.set()
            self._sender.join(timeout=5.0)
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
        self._outbox.close()
        return flushed

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stats(self) -> ClientStats:
        outbox = self._outbox.stats()
        return ClientStats(
            connected=self._connected.is_set(),
            pending_records=outbox.pending_records,
            outbox_messages=outbox.messages,
            inflight=len(self._inflight),
            max_inflight_seen=self._max_inflight_seen,
            acked_messages=self._window.acked,
            rejected_messages=self._window.rejected,
            publish_refusals=self._refusals,
        )

    def __enter__(self) -> DeviceClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("event=mqtt_connect_refused reason=%s", reason_code)
            return
        self._window.connected(properties)
        log.info(
            "event=mqtt_connected host=%s port=%s receive_maximum=%s",
            self._broker.host,
            self._broker.port,
            self._window.limit,
        )
        if self._status_topic is not None:
            status = dict(self._status or {})
            status.update(online=True, ts=_now_rfc3339())
            self._send_status(status)
        self._connected.set()
        self._wakeup.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("event=mqtt_disconnected reason=%s", reason_code)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._acks.append((mid, reason_code))
        self._wakeup.set()

    # ---- sender thread --------------------------------------------------------------------

    def _run_sender(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the work, so a wake-up that arrives during it is not lost.
            self._wakeup.clear()
            try:
                self._settle_acks()
                next_deadline = self._seal_due()
                self._dispatch()
            except Exception:
                # The thread must outlive a bad moment (a disk full, a locked file):
                # everything it works from is in the outbox and is retried next round.
                log.exception("event=device_sender_error")
                next_deadline = time.time() + 1.0
            timeout = max(0.0, min(next_deadline - time.time(), 1.0))
            self._wakeup.wait(timeout)
        self._settle_acks()

    def _settle_acks(self) -> None:
        acked: list[int] = []
        rejected = 0
        while self._acks:
            mid, reason_code = self._acks.popleft()
            message_id = self._inflight.pop(mid, None)
            if message_id is None:
                continue  # a status message, which is not in the outbox
            self._window.acknowledged(reason_code)
            if reason_code.is_failure:
                # Resending would be refused again (typically an ACL denial): park it.
                log.error(
                    "event=mqtt_publish_rejected message_id=%s reason=%s", message_id, reason_code
                )
                self._outbox.reject(message_id, str(reason_code))
                rejected += 1
            else:
                acked.append(message_id)
        if acked:
            self._outbox.acknowledge(acked)
        if acked or rejected:
            with self._progress:
                self._progress.notify_all()

    def _seal_due(self) -> float:
        """Turn due records into messages; returns when the next batch falls due."""
        options = self._options
        with self._pending_lock:
            now = time.time()
            everything, self._seal_everything = self._seal_everything, False
            sealed_any = False
            for topic, (count, oldest) in list(self._pending.items()):
                due = everything or now - oldest >= options.batch_interval_s
                if due or count >= options.batch_max_records:
                    self._outbox.seal(
                        topic,
                        max_records=options.batch_max_records,
                        max_bytes=options.batch_max_bytes,
                        full_only=not due,
                    )
                    sealed_any = True
            if sealed_any:
                self._pending = self._outbox.pending_topics()
            oldest_pending = min((oldest for _, oldest in self._pending.values()), default=None)
        if oldest_pending is None:
            return now + 1.0
        return oldest_pending + options.batch_interval_s

    def _dispatch(self) -> None:
        while self._connected.is_set() and not self._stopping.is_set():
            room = self._window.room
            if room <= 0:
                return
            messages = self._outbox.messages_after(self._last_dispatched, room)
            if not messages:
                return
            for message in messages:
                self._window.handed_over()
                info = self._mqtt.publish(
                    message.topic, message.payload, qos=1, retain=message.retain
                )
                if info.rc not in PUBLISH_QUEUED:
                    self._window.withdrawn()
                    self._refusals += 1
                    log.debug(
                        "event=mqtt_publish_refused rc=%s message_id=%s",
                        mqtt.error_string(info.rc),
                        message.id,
                    )
                    # Retry the same message once paho has room (an ack wakes us) or soon.
                    self._wakeup.wait(0.05)
                    return
                self._inflight[info.mid] = message.id
                self._last_dispatched = message.id
                self._max_inflight_seen = max(self._max_inflight_seen, len(self._inflight))

    def _send_status(self, document: Mapping[str, Any]) -> mqtt.MQTTMessageInfo | None:
        assert self._status_topic is not None
        info = self._mqtt.publish(self._status_topic, orjson.dumps(document), qos=1, retain=True)
        if info.rc not in PUBLISH_QUEUED:
            log.warning("event=status_publish_refused rc=%s", mqtt.error_string(info.rc))
            return None
        return info


def _station_record_topic(station_code: str, kind: RecordKind, prefix: str) -> str:
    if kind is RecordKind.status:
        raise ValueError("status is state, not a record stream: use publish_status()")
    return station_topic(station_code, kind, prefix)


def encode_record(record: Record) -> bytes:
    if isinstance(record, BaseModel):
        # pydantic's own JSON serialiser: several times faster than model_dump + orjson.
        return record.__pydantic_serializer__.to_json(record, exclude_none=True)
    return orjson.dumps(record)


def _check_identifier(value: str) -> None:
    # The identity becomes a topic level and an ACL line: no wildcards, slashes or newlines.
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid station code or VIN for a topic")


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat()
