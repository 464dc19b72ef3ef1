"""The ingest's writer process: decodes, validates and writes batches of raw MQTT messages.

paho's network loop, the per-message acknowledgements and everything else per record would
share one interpreter lock if they ran in one process, and paho alone keeps a core busy at a
few thousand messages a second. So the MQTT side (app/ingest/client.py) only queues raw
payloads and acknowledges, and this process, on the other core, does the rest: it answers
each job with the outcome of its commits, and only then are its messages acknowledged.

Inside, a decode thread validates the next job while WRITERS threads write earlier ones, each
on its own connection: the identity checks and the COPY into its staging tables run side by
side; the insert runs one job at a time in arrival order, and so, overlapping with the next
job's insert, do derived state and commit (two Turnstiles). The answers go back in that
order.

A job is a list of (topic, payload, received_at as epoch seconds). The process ends when its
parent closes the pipe, sends None, or dies; a job it could not write because it was asked to
stop with the database down is answered with `result=None`, and nothing of it is acknowledged.
"""

import gc
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event
from typing import Any

from app.core import clock
from app.core.config import Settings
from app.ingest.payloads import DecodedMessage, decode_message
from app.ingest.retry import write_with_retry
from app.ingest.writer import BatchWriter, TurnTimeout, WriteResult, libpq_url

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


@dataclass(frozen=True)
class Quarantine:
    """Messages to store as dead letters without decoding them: the parent found that each
    ended a writer process (see app/ingest/client.py)."""

    messages: Job
    reason: str
    detail: str


def quarantine_job(settings: Settings, job: Quarantine) -> DecodedJob:
    started = time.perf_counter()
    decoded = []
    for topic, payload, at in job.messages:
        message = DecodedMessage(topic, None, bytes(payload), clock.from_timestamp(at))
        message.dead_letter(job.reason, job.detail, limit=settings.ingest_dead_letter_payload_bytes)
        decoded.append(message)
    return DecodedJob(decoded, {"quarantined": len(decoded)}, time.perf_counter() - started)


def _abort_on_marker(marker: str, job: Job) -> None:
    # Fault injection (Settings.ingest_test_abort_marker): dies at once, as on a crash in C
    # code or the kernel's OOM killer (SIGKILL: no core file, no cleanup).
    needle = marker.encode()
    if any(needle in payload for _, payload, _ in job):
        os.kill(os.getpid(), signal.SIGKILL)


def decode_job(settings: Settings, job: Job) -> DecodedJob:
    started = time.perf_counter()
    if settings.ingest_test_abort_marker:
        _abort_on_marker(settings.ingest_test_abort_marker, job)
    decoded = [
        decode_message(
            topic, bytes(payload), settings=settings, received_at=clock.from_timestamp(at)
        )
        for topic, payload, at in job
    ]
    kinds = Counter(m.identity.kind.value if m.identity else "unknown" for m in decoded)
    return DecodedJob(decoded, dict(kinds), time.perf_counter() - started)


def write_job(
    writer: BatchWriter,
    settings: Settings,
    job: DecodedJob,
    stopping: Callable[[], bool],
    turn: "JobTurn | None" = None,
) -> JobOutcome:
    started = time.perf_counter()
    outcome = JobOutcome(None, job.kinds)

    def count_retry() -> None:
        outcome.retries += 1

    merged = WriteResult()
    parts = chunks(job.messages, settings.ingest_batch_max_records)
    for i, chunk in enumerate(parts):
        if turn is not None:
            # The next job may insert once this one's last chunk has: an earlier chunk's
            # insert then never waits for keys a later job inserted (see JobTurn).
            turn.last_chunk = i == len(parts) - 1
        result = write_with_retry(
            writer,
            chunk,
            retry_max_s=settings.ingest_retry_max_s,
            stopping=stopping,
            on_retry=count_retry,
            turn=turn,
        )
        if result is None:
            # Earlier chunks are committed; unacknowledged, they come back as duplicates.
            break
        merged.merge(result)
    else:
        outcome.result = merged
    outcome.seconds = job.seconds + time.perf_counter() - started
    return outcome


# The writer process's first message: imported, and connected to PostgreSQL if it is up.
READY = "ready"
# Starting a Python process and importing the app takes a second or two; more means broken.
READY_TIMEOUT_S = 60.0

SWITCH_INTERVAL_S = 0.0005

# Batches written at once, each on its own connection: while one batch's derived state is
# updated and committed, the next is inserted and the one after it checked and copied. Three
# kept both cores busy in bench/bench_ingest.py (b) where two left gaps, and four did no
# better (docs/benchmarks.md).
WRITERS = 3
# Jobs decoded and waiting for a writer. The decode thread holds the interpreter lock in
# long stretches; with two ready, a writer that finishes finds work even when decoding the
# next job has not ended (bench/bench_ingest.py (b): 0.57-0.63 -> 0.66-0.67 x raw COPY with
# one ready, in alternating runs).
DECODED_AHEAD = 2
# Jobs the parent hands over and has not had answered (app/ingest/client.py): one per writer
# and those decoded ahead, so that no writer idles while the next job is collected and decoded.
MAX_JOBS_IN_FLIGHT = WRITERS + DECODED_AHEAD

# How long a staged batch waits for its turn before rolling back and trying again (see
# writer.Turn): long enough for any healthy batch ahead of it.
TURN_PATIENCE_S = 10.0


class Turnstile:
    """Lets jobs through a phase one at a time, in the order they were received."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._serving = 0

    def wait(self, number: int, patience_s: float | None) -> bool:
        # At or past: a job tried again after it inserted finds its insert turn passed.
        with self._changed:
            return self._changed.wait_for(lambda: self._serving >= number, patience_s)

    def done(self, number: int) -> None:
        with self._changed:
            self._serving = max(self._serving, number + 1)
            self._changed.notify_all()


@dataclass
class JobTurn:
    """A job's turns: to insert, then to update derived state, commit and answer.

    In arrival order, so derived state is computed one batch at a time, as with one writer,
    and the parent gets the answers in the order it acknowledges them. Inserts go in that
    order too: an insert of a key another open transaction inserted waits for that one to
    end, so a job that inserted ahead of an earlier one could hold a key the earlier one
    then waits for, while it waits for the earlier one's commit."""

    inserts: Turnstile
    commits: Turnstile
    number: int
    last_chunk: bool = True

    def wait_to_insert(self) -> None:
        self._wait(self.inserts, "insert")

    def inserted(self) -> None:
        if self.last_chunk:
            self.inserts.done(self.number)

    def wait(self) -> None:
        self._wait(self.commits, "commit")

    @contextmanager
    def withheld(self) -> Iterator[None]:
        last, self.last_chunk = self.last_chunk, False
        try:
            yield
        finally:
            self.last_chunk = last

    def _wait(self, turnstile: Turnstile, phase: str) -> None:
        if not turnstile.wait(self.number, TURN_PATIENCE_S):
            raise TurnTimeout(f"job {self.number} waited {TURN_PATIENCE_S:g} s to {phase}")


def _read_and_decode(
    pipe: Pipe, settings: Settings, ready: "queue.Queue[tuple[int, DecodedJob] | None]"
) -> None:
    """Decodes the next job while earlier ones are being written: the writers mostly wait
    for PostgreSQL then, with the interpreter lock released."""
    number = 0
    try:
        while True:
            try:
                job = pipe.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            if isinstance(job, Quarantine):
                ready.put((number, quarantine_job(settings, job)))
            else:
                ready.put((number, decode_job(settings, job)))
            number += 1
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
    # The decode thread runs for long stretches in pydantic while the writers' threads wait on
    # PostgreSQL; each answer then waited up to the default 5 ms for the interpreter lock, a
    # dozen times per batch per writer. Handing it over sooner keeps PostgreSQL busy.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    finished = threading.Event()

    def stopping() -> bool:
        # An orphan (the ingest was killed) must not retry a dead database forever.
        return stop.is_set() or finished.is_set() or (parent is not None and not parent.is_alive())

    ready: queue.Queue[tuple[int, DecodedJob] | None] = queue.Queue(maxsize=DECODED_AHEAD)
    inserts, commits = Turnstile(), Turnstile()

    writers = [BatchWriter(libpq_url(settings.sqlalchemy_url()), settings) for _ in range(WRITERS)]
    for writer in writers:
        writer.connect_if_possible()
    try:
        pipe.send(READY)
    except OSError:
        return

    def write_jobs(writer: BatchWriter) -> None:
        try:
            while not finished.is_set():
                item = ready.get()
                if item is None:
                    ready.put(None)  # for the other writers
                    return
                number, decoded = item
                turn = JobTurn(inserts, commits, number)
                outcome = write_job(writer, settings, decoded, stopping, turn)
                # A job that gave up before inserting must not hold up the ones after it.
                inserts.done(number)
                commits.wait(number, None)
                try:
                    pipe.send(outcome)
                except OSError:
                    return  # the ingest is gone: its messages stay unacknowledged
                finally:
                    commits.done(number)
                if outcome.result is None:
                    return
        finally:
            writer.close()
            finished.set()

    threading.Thread(
        target=_read_and_decode, args=(pipe, settings, ready), name="decode", daemon=True
    ).start()
    for i, writer in enumerate(writers):
        threading.Thread(target=write_jobs, args=(writer,), name=f"write-{i}", daemon=True).start()
    # The first writer to finish ends the process: the others are idle or their jobs'
    # answers could no longer be sent in order; their transactions roll back unacknowledged.
    finished.wait()


def _serve_as_child(pipe: Pipe, settings: Settings, stop: Event) -> None:
    # Ctrl-C reaches every process of the terminal's group; the parent answers it by
    # stopping this one after its queued jobs, which a KeyboardInterrupt here would cut off.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(pipe, settings, stop)


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
            target=_serve_as_child,
            args=(child_end, self.settings, self.stop_event),
            name="ingest-writer",
            daemon=True,
        )
        self.process.start()
        # Only the child holds its end now, so the child sees EOF when the parent dies.
        child_end.close()
        self.pipe = parent_end
        # Messages are taken from the broker only once there is someone to write them: a
        # backlog waits in the broker, not in this process's memory, while the writer starts.
        if not parent_end.poll(READY_TIMEOUT_S) or parent_end.recv() != READY:
            self.process.terminate()
            raise RuntimeError(f"the writer process did not start in {READY_TIMEOUT_S:g} s")

    def submit(self, job: Job | Quarantine) -> None:
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
