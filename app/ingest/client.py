"""The ingest process: a paho-mqtt 2.x subscriber feeding one batching writer process.

paho's network thread only queues each raw message (`on_message`); a sender thread batches
them and hands each batch to the writer process (app/ingest/worker.py), which decodes,
validates and commits it; a receiver thread acknowledges a batch's messages (manual_ack)
only once the writer answers that it is committed. A crash at any point leaves every
uncommitted message with the broker, which redelivers it to our persistent session;
redeliveries of committed records are absorbed by the natural keys.
"""

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from app.core import clock, metrics
from app.core.config import Settings
from app.ingest.worker import MAX_JOBS_IN_FLIGHT, Job, JobOutcome, Quarantine, WriterProcess
from app.ingest.writer import WriteResult
from app.ingest.writer import libpq_url as libpq_url
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


# (topic, payload, received_at as epoch seconds, mid, qos, connection generation). A tuple, not
# an object: it is built once per message on paho's network thread.
Pending = tuple[str, bytes | bytearray, float, int, int, int]

# Every record of the contract has one "ts": counting them in the raw bytes sizes a job
# before it is decoded (the writer still commits at most ingest_batch_max_records records
# per transaction, splitting a job that holds more).
TS_KEY = b'"ts"'
# How long the sender sleeps when the queue is empty while it gathers a batch.
COLLECT_NAP_S = 0.005


def _job(batch: list[Pending]) -> Job:
    return [(p[0], p[1], p[2]) for p in batch]


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
        # The shipped broker uses the username as the client id (use_username_as_clientid):
        # unless one is set, ours is the username too, so the logs name the real session.
        explicit = "ingest_client_id" in settings.model_fields_set
        self.client_id = client_id or (
            self.broker.username
            if self.broker.username and not explicit
            else settings.ingest_client_id
        )
        self.share_group = share_group if share_group is not None else settings.ingest_share_group
        self.mqtt5 = settings.mqtt_protocol == "5"
        if self.share_group and not self.mqtt5:
            raise ValueError(
                "shared subscriptions ($share/...) need MQTT 5, but SWAPFLEET_MQTT_PROTOCOL is "
                f"{settings.mqtt_protocol}: unset the share group or use an MQTT 5 broker"
            )
        self.writer = WriterProcess(settings)
        # SimpleQueue: the cheapest hand-off from paho's thread, once per message.
        self._queue: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self._in_flight: deque[list[Pending]] = deque()
        # Held to hand a job to the writer process, and while a dead one's jobs are recovered.
        self._writer_lock = threading.Lock()
        self._job_slots = threading.Semaphore(MAX_JOBS_IN_FLIGHT)
        self._writer_gone = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        # Read by tests and logs; only paho's network thread writes it.
        self.messages_received = 0
        self._generation_lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._sender = threading.Thread(target=self._run_sender, name="ingest-sender", daemon=True)
        self._receiver = threading.Thread(
            target=self._run_receiver, name="ingest-receiver", daemon=True
        )
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        # MQTT 3.1.1 has no session expiry: clean_session=False keeps our session for as long
        # as the broker keeps it (MQTT 5 says so at connect, with clean_start). Nor has it
        # Receive Maximum: the broker alone decides how many unacknowledged messages it sends.
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
            clean_session=None if self.mqtt5 else False,
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
        self.writer.start()
        self._sender.start()
        self._receiver.start()
        if self.mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.settings.ingest_session_expiry_s
            properties.ReceiveMaximum = self.settings.ingest_receive_maximum
            self.client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=30,
                clean_start=False,
                properties=properties,
            )
        else:
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        log.info(
            "event=ingest_started client_id=%s broker=%s:%d mqtt=%s subscriptions=%s",
            self.client_id,
            self.broker.host,
            self.broker.port,
            self.settings.mqtt_protocol,
            ",".join(self.subscriptions()),
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Writes what is queued, acknowledges it, then disconnects."""
        self._stop.set()
        # With the database down, a write gives up instead of retrying: nothing is acked.
        self.writer.request_stop()
        deadline = time.monotonic() + timeout
        self._sender.join(timeout)
        self._receiver.join(max(0.1, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        self.writer.finish()
        self.writer.join(5)
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
        if self.mqtt5:
            options = SubscribeOptions(qos=1)
            client.subscribe([(topic, options) for topic in self.subscriptions()])
        else:
            client.subscribe([(topic, 1) for topic in self.subscriptions()])

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
            log.info("event=subscribed filters=%d", len(reason_codes))
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
        # Decoding and validation happen in the writer process, off this interpreter.
        try:
            self._queue.put(
                (msg.topic, msg.payload, time.time(), msg.mid, msg.qos, self._generation)
            )
            self.messages_received += 1
        except Exception:
            log.exception("event=message_failed topic=%s bytes=%d", msg.topic, len(msg.payload))

    # ---- sender and receiver threads ------------------------------------------------------

    def _collect(self) -> list[Pending]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        limit = self.settings.ingest_batch_max_records
        records = max(1, first[1].count(TS_KEY))
        deadline = time.monotonic() + self.settings.ingest_batch_window_s
        take = self._queue.get_nowait
        while records < limit:
            try:
                item = take()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Let messages gather rather than wake for each one: a wake-up per message
                # is a thread switch per message, which paho's thread pays for.
                time.sleep(min(COLLECT_NAP_S, remaining))
                continue
            batch.append(item)
            records += max(1, item[1].count(TS_KEY))
        return batch

    def _run_sender(self) -> None:
        try:
            while not self._writer_gone.is_set():
                batch = self._collect()
                if not batch:
                    if self._stop.is_set():
                        return
                    continue
                while not self._job_slots.acquire(timeout=0.2):
                    if self._writer_gone.is_set():
                        return
                with self._writer_lock:
                    self._in_flight.append(batch)
                    try:
                        self.writer.submit(_job(batch))
                    except OSError:
                        # The writer died: the receiver recovers this batch with its others.
                        log.warning("event=writer_process_unreachable")
        finally:
            with self._writer_lock:
                self.writer.finish()

    def _run_receiver(self) -> None:
        try:
            while True:
                try:
                    outcome = self.writer.receive()
                except (EOFError, OSError):
                    if self._stop.is_set():
                        # Its batches stay unacknowledged; a restarted ingest gets them again.
                        return
                    if not self._recover():
                        self._stop.set()
                        return
                    continue
                batch = self._in_flight.popleft()
                self._job_slots.release()
                self._count_messages(outcome)
                if outcome.result is None:
                    return  # stopping with the database down: the broker still holds the batch
                self._observe(outcome.result, outcome.seconds)
                self._acknowledge(batch)
        finally:
            self._writer_gone.set()

    # ---- a writer process that died ------------------------------------------------------
    #
    # Whatever a message makes the writer raise is dead-lettered there; what ends the process
    # itself (a crash in C code, the OOM killer) cannot be caught in it. Restarting the
    # ingest would not help: the broker hands it the same unacknowledged messages again, and
    # the writer dies again. So the parent, which still holds every message it handed over,
    # starts a new writer and tries them again in halves; a message that ends a writer on
    # its own is dead-lettered as `writer_crash` and acknowledged. Should this process die
    # too, the next one does the same with the redelivered messages.

    def _recover(self) -> bool:
        """False if no writer could be started again."""
        with self._writer_lock:
            suspects = [message for batch in self._in_flight for message in batch]
            jobs = len(self._in_flight)
            self._in_flight.clear()
            log.error("event=writer_process_died messages_in_flight=%d", len(suspects))
            try:
                self._restart_writer()
                self._isolate(suspects)
            except RuntimeError as exc:
                log.error("event=writer_restart_failed error=%s", exc)
                return False
            finally:
                for _ in range(jobs):
                    self._job_slots.release()
        return True

    def _restart_writer(self) -> None:
        self.writer.join(5)
        metrics.INGEST_WRITER_RESTARTS.inc()
        self.writer = WriterProcess(self.settings)
        self.writer.start()

    def _isolate(self, messages: list[Pending]) -> None:
        """Writes the messages, bisecting around those that end the writer. All of them are
        tried together first: a writer can die of something else (the OOM killer taking
        the largest process), and a message is condemned only for dying alone."""
        if self._stop.is_set() or not messages:
            return  # unacknowledged: the broker redelivers them to the next run
        if self._replay(messages):
            return
        if len(messages) == 1:
            self._quarantine(messages[0])
            return
        middle = len(messages) // 2
        self._isolate(messages[:middle])
        self._isolate(messages[middle:])

    def _replay(self, messages: list[Pending]) -> bool:
        """One job, waited for; False if the writer died on it (and was started again)."""
        return self._run_alone(_job(messages), messages)

    def _quarantine(self, message: Pending) -> None:
        topic, payload = message[0], message[1]
        log.error("event=message_quarantined topic=%s bytes=%d", topic, len(payload))
        job = Quarantine(_job([message]), "writer_crash", "the ingest's writer process died on it")
        if not self._run_alone(job, [message]):
            # Not even its dead letter could be written: dropping it is the only way on.
            log.error("event=message_dropped topic=%s payload=%r", topic, bytes(payload[:200]))
            self._acknowledge([message])

    def _run_alone(self, job: Job | Quarantine, messages: list[Pending]) -> bool:
        """Hands one job to the writer and waits for it, acknowledging its messages once
        stored; False if the writer died on it (and was started again)."""
        try:
            self.writer.submit(job)
            outcome = self.writer.receive()
        except (EOFError, OSError):
            self._restart_writer()
            return False
        self._count_messages(outcome)
        if outcome.result is not None:
            self._observe(outcome.result, outcome.seconds)
            self._acknowledge(messages)
        return True

    def _acknowledge(self, batch: list[Pending]) -> None:
        current = self._generation
        ack = self.client.ack
        for _, _, _, mid, qos, generation in batch:
            # A message delivered on an earlier connection will be redelivered on this one
            # with a new id; acking its old id could acknowledge a different message.
            if generation == current and qos > 0:
                ack(mid, qos)

    @staticmethod
    def _count_messages(outcome: JobOutcome) -> None:
        for kind, n in outcome.messages.items():
            metrics.INGEST_MESSAGES.labels(kind).inc(n)
        if outcome.retries:
            metrics.INGEST_WRITE_RETRIES.inc(outcome.retries)

    @staticmethod
    def _observe(result: WriteResult, seconds: float) -> None:
        metrics.INGEST_COMMIT_SECONDS.observe(seconds)
        metrics.INGEST_BATCH_RECORDS.observe(result.records)
        now = clock.now()
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
