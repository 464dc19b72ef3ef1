"""The ingest process: a paho-mqtt 2.x subscriber feeding one batching writer thread.

paho's network thread only decodes and validates (`on_message`) and queues; the writer
thread commits batches and only then acknowledges their messages (manual_ack), so a crash
at any point leaves every uncommitted message with the broker, which redelivers it to our
persistent session. Redeliveries of committed records are absorbed by the natural keys.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from app import metrics
from app.config import Settings
from app.ingest.payloads import DecodedMessage, decode_message
from app.ingest.writer import BatchWriter, WriteResult, write_with_retry
from devices.contract import subscription_filters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt://host:port)")
    return BrokerAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 1883,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def libpq_url(database_url: str) -> str:
    """psycopg wants the libpq form of the SQLAlchemy URL."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass(frozen=True)
class Pending:
    message: DecodedMessage
    mid: int
    qos: int
    # Message ids are only meaningful on the connection that delivered them.
    generation: int


class IngestService:
    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str | None = None,
        share_group: str | None = None,
    ) -> None:
        if not settings.mqtt_url:
            raise ValueError("SWAPFLEET_MQTT_URL is not set")
        self.settings = settings
        self.broker = parse_mqtt_url(settings.mqtt_url)
        self.client_id = client_id or settings.ingest_client_id
        self.share_group = share_group if share_group is not None else settings.ingest_share_group
        self.writer = BatchWriter(libpq_url(settings.sqlalchemy_url()), settings)
        self._queue: queue.Queue[Pending] = queue.Queue()
        self._stop = threading.Event()
        self._generation = 0
        # Read by tests and logs; only paho's network thread writes it.
        self.messages_received = 0
        self._generation_lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._writer_thread = threading.Thread(
            target=self._run_writer, name="ingest-writer", daemon=True
        )
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        return client

    def subscriptions(self) -> list[str]:
        filters = subscription_filters(self.settings.mqtt_topic_prefix)
        if self.share_group:
            return [f"$share/{self.share_group}/{f}" for f in filters]
        return filters

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.ingest_session_expiry_s
        properties.ReceiveMaximum = self.settings.ingest_receive_maximum
        self._writer_thread.start()
        self.client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=30,
            clean_start=False,
            properties=properties,
        )
        self.client.loop_start()
        log.info(
            "event=ingest_started client_id=%s broker=%s:%d subscriptions=%s",
            self.client_id,
            self.broker.host,
            self.broker.port,
            ",".join(self.subscriptions()),
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Writes what is queued, acknowledges it, then disconnects."""
        self._stop.set()
        self._writer_thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self.writer.close()
        metrics.INGEST_BROKER_CONNECTED.set(0)

    def request_stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        self.start()
        try:
            self._stop.wait()
        finally:
            self.stop()

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
            log.error("event=broker_refused reason=%s", reason_code)
            return
        with self._generation_lock:
            self._generation += 1
        metrics.INGEST_BROKER_CONNECTED.set(1)
        self.connected.set()
        log.info("event=broker_connected session_present=%s", flags.session_present)
        # Subscribing on every connect, not once: a broker that lost our session would
        # otherwise leave us connected and deaf.
        options = SubscribeOptions(qos=1)
        client.subscribe([(topic, options) for topic in self.subscriptions()])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("event=subscribe_refused reasons=%s", ",".join(failed))
        else:
            self.subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        metrics.INGEST_BROKER_CONNECTED.set(0)
        self.connected.clear()
        self.subscribed.clear()
        log.warning("event=broker_disconnected reason=%s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Never raise here: paho would drop the connection, and the message would come back.
        try:
            decoded = decode_message(
                msg.topic, bytes(msg.payload), settings=self.settings, received_at=datetime.now(UTC)
            )
            kind = decoded.identity.kind.value if decoded.identity else "unknown"
            metrics.INGEST_MESSAGES.labels(kind).inc()
            self.messages_received += 1
            self._queue.put(Pending(decoded, msg.mid, msg.qos, self._generation))
        except Exception:
            log.exception("event=message_failed topic=%s bytes=%d", msg.topic, len(msg.payload))

    # ---- writer thread --------------------------------------------------------------------

    def _collect(self) -> list[Pending]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        records = len(first.message.records) + len(first.message.dead_letters)
        deadline = time.monotonic() + self.settings.ingest_batch_window_s
        while records < self.settings.ingest_batch_max_records:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            batch.append(item)
            records += len(item.message.records) + len(item.message.dead_letters)
        return batch

    def _run_writer(self) -> None:
        while True:
            batch = self._collect()
            if not batch:
                if self._stop.is_set():
                    return
                continue
            started = time.perf_counter()
            result = write_with_retry(
                self.writer,
                [p.message for p in batch],
                retry_max_s=self.settings.ingest_retry_max_s,
                stopping=self._stop.is_set,
                on_retry=metrics.INGEST_WRITE_RETRIES.inc,
            )
            if result is None:
                return  # stopping with the database down: the broker still holds the batch
            self._observe(result, time.perf_counter() - started)
            self._acknowledge(batch)

    def _acknowledge(self, batch: list[Pending]) -> None:
        current = self._generation
        for pending in batch:
            # A message delivered on an earlier connection will be redelivered on this one
            # with a new id; acking its old id could acknowledge a different message.
            if pending.generation == current and pending.qos > 0:
                self.client.ack(pending.mid, pending.qos)

    @staticmethod
    def _observe(result: WriteResult, seconds: float) -> None:
        metrics.INGEST_COMMIT_SECONDS.observe(seconds)
        metrics.INGEST_BATCH_RECORDS.observe(result.records)
        now = datetime.now(UTC)
        for kind, n in result.stored.items():
            metrics.INGEST_RECORDS.labels(kind.value, "stored").inc(n)
        for kind, n in result.duplicates.items():
            metrics.INGEST_RECORDS.labels(kind.value, "duplicate").inc(n)
        for kind, ts in result.newest_ts.items():
            metrics.INGEST_LAG_SECONDS.labels(kind.value).observe(
                max(0.0, (now - ts).total_seconds())
            )
        for row in result.dead_letters:
            metrics.INGEST_DEAD_LETTERS.labels(row.reason).inc()
            log.warning(
                "event=dead_letter reason=%s topic=%s detail=%s",
                row.reason,
                row.topic,
                row.detail[:200],
            )
