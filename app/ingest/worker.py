"""The ingest's writer process: decodes, validates and writes batches of raw MQTT messages.

paho's network loop, the per-message acknowledgements and everything else per record would
share one interpreter lock if they ran in one process, and paho alone keeps a core busy at a
few thousand messages a second. So the MQTT side (app/ingest/client.py) only queues raw
payloads and acknowledges, and this process, on the other core, does the rest: it answers
each job with the outcome of its commits, and only then are its messages acknowledged.

A job is a list of (topic, payload, received_at as epoch seconds). The process ends when its
parent closes the pipe, sends None, or dies; a job it could not write because it was asked to
stop with the database down is answered with `result=None`, and nothing of it is acknowledged.
"""

import gc
import logging
import multiprocessing
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event
from typing import Any

from app.config import Settings
from app.ingest.payloads import DecodedMessage, decode_message
from app.ingest.writer import BatchWriter, WriteResult, libpq_url, write_with_retry

log = logging.getLogger(__name__)

Job = list[tuple[str, bytes | bytearray, float]]


@dataclass
class JobOutcome:
    result: WriteResult | None
    # Messages by record kind ("unknown" for a topic outside the contract), for the metrics.
    messages: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    seconds: float = 0.0


def chunks(messages: Sequence[DecodedMessage], max_records: int) -> list[Sequence[DecodedMessage]]:
    """Consecutive runs of whole messages of at most max_records records (one message more
    when a single message is larger): one transaction each."""
    out: list[Sequence[DecodedMessage]] = []
    start, records = 0, 0
    for i, message in enumerate(messages):
        size = len(message.records) + len(message.dead_letters)
        if records and records + size > max_records:
            out.append(messages[start:i])
            start, records = i, 0
        records += size
    if start < len(messages):
        out.append(messages[start:])
    return out


@dataclass
class DecodedJob:
    messages: list[DecodedMessage]
    kinds: dict[str, int]
    seconds: float


def decode_job(settings: Settings, job: Job) -> DecodedJob:
    started = time.perf_counter()
    decoded = [
        decode_message(
            topic, bytes(payload), settings=settings, received_at=datetime.fromtimestamp(at, UTC)
        )
        for topic, payload, at in job
    ]
    kinds = Counter(m.identity.kind.value if m.identity else "unknown" for m in decoded)
    return DecodedJob(decoded, dict(kinds), time.perf_counter() - started)


def write_job(
    writer: BatchWriter, settings: Settings, job: DecodedJob, stopping: Callable[[], bool]
) -> JobOutcome:
    started = time.perf_counter()
    outcome = JobOutcome(None, job.kinds)

    def count_retry() -> None:
        outcome.retries += 1

    merged = WriteResult()
    for chunk in chunks(job.messages, settings.ingest_batch_max_records):
        result = write_with_retry(
            writer,
            chunk,
            retry_max_s=settings.ingest_retry_max_s,
            stopping=stopping,
            on_retry=count_retry,
        )
        if result is None:
            # Earlier chunks are committed; unacknowledged, they come back as duplicates.
            break
        merged.merge(result)
    else:
        outcome.result = merged
    outcome.seconds = job.seconds + time.perf_counter() - started
    return outcome


def _read_and_decode(
    pipe: Pipe, settings: Settings, ready: "queue.Queue[DecodedJob | None]"
) -> None:
    """Decodes the next job while the previous one is being written: the writer mostly waits
    for PostgreSQL then, with the interpreter lock released."""
    try:
        while True:
            try:
                job = pipe.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            ready.put(decode_job(settings, job))
    finally:
        ready.put(None)


def serve(pipe: Pipe, settings: Settings, stop: Event) -> None:
    """The writer process's main loop."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    parent = multiprocessing.parent_process()
    # A job makes tens of thousands of short-lived objects (one validated model per record,
    # none in a reference cycle); at the default thresholds the cyclic collector ran so
    # often, over an ever older heap, that it cost as much as the validation itself.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)

    def stopping() -> bool:
        # An orphan (the ingest was killed) must not retry a dead database forever.
        return stop.is_set() or (parent is not None and not parent.is_alive())

    writer = BatchWriter(libpq_url(settings.sqlalchemy_url()), settings)
    ready: queue.Queue[DecodedJob | None] = queue.Queue(maxsize=1)
    threading.Thread(
        target=_read_and_decode, args=(pipe, settings, ready), name="decode", daemon=True
    ).start()
    try:
        while True:
            decoded = ready.get()
            if decoded is None:
                return
            outcome = write_job(writer, settings, decoded, stopping)
            try:
                pipe.send(outcome)
            except OSError:
                return  # the ingest is gone: its messages stay unacknowledged
            if outcome.result is None:
                return
    finally:
        writer.close()


@dataclass
class WriterProcess:
    """The parent's handle on the writer process."""

    settings: Settings
    pipe: Pipe | None = None
    process: Any = None
    stop_event: Event | None = None

    def start(self) -> None:
        # spawn, not fork: the parent already runs threads (paho, metrics, prune).
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        self.stop_event = context.Event()
        self.process = context.Process(
            target=serve,
            args=(child_end, self.settings, self.stop_event),
            name="ingest-writer",
            daemon=True,
        )
        self.process.start()
        # Only the child holds its end now, so the child sees EOF when the parent dies.
        child_end.close()
        self.pipe = parent_end

    def submit(self, job: Job) -> None:
        assert self.pipe is not None
        self.pipe.send(job)

    def receive(self) -> JobOutcome:
        assert self.pipe is not None
        outcome = self.pipe.recv()
        assert isinstance(outcome, JobOutcome)
        return outcome

    def request_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    def finish(self) -> None:
        """Tells the process to exit once its queued jobs are answered."""
        if self.pipe is not None:
            try:
                self.pipe.send(None)
            except OSError:
                pass

    def join(self, timeout: float) -> None:
        if self.process is None:
            return
        self.process.join(timeout)
        if self.process.is_alive():
            log.warning("event=writer_process_killed timeout_s=%.1f", timeout)
            self.process.terminate()
            self.process.join(5)
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
