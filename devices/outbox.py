"""A durable outbox for device records, in SQLite (WAL).

Records are stored the moment the device hands them over, grouped later into messages (one
topic, up to a record count, a byte size or an age), and a message row is deleted only once
the broker has acknowledged it. A crash, a broker outage or a reboot therefore loses nothing
that `append` accepted; after a restart unacknowledged messages are sent again (QoS 1 allows
the duplicate, and the ingest deduplicates by natural key).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SynchronousMode = Literal["OFF", "NORMAL", "FULL"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_pending_records_topic_id ON pending_records (topic, id);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    record_count INTEGER NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    sealed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected_messages (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    record_count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    record_count: int
    retain: bool


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending_records: int
    messages: int
    rejected_messages: int


class Outbox:
    """Thread-safe: the caller's threads append, the client's sender thread seals and deletes.

    `path=None` keeps the outbox in memory: it still rides out a broker outage, but not a
    crash of the process.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        synchronous: SynchronousMode = "NORMAL",
    ) -> None:
        self._lock = threading.Lock()
        target = ":memory:" if path is None else str(path)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            target, check_same_thread=False, isolation_level=None, timeout=1.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of the process, not of the power supply;
        # station software on flaky power should pass FULL and pay one fsync per append.
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        # Two processes draining one outbox would send every record twice: refuse that.
        self._conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._conn.executescript(_SCHEMA)
        # Taking the write lock now makes a second process fail at open, not mid-stream.
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def append(self, topic: str, payloads: Sequence[bytes]) -> None:
        now = time.time()
        with self._lock, self._transaction():
            self._conn.executemany(
                "INSERT INTO pending_records (topic, payload, enqueued_at) VALUES (?, ?, ?)",
                [(topic, payload, now) for payload in payloads],
            )

    def pending_topics(self) -> dict[str, tuple[int, float]]:
        """Each topic with records not yet in a message: (record count, oldest enqueue time)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT topic, count(*), min(enqueued_at) FROM pending_records GROUP BY topic"
            ).fetchall()
        return {str(topic): (int(count), float(oldest)) for topic, count, oldest in rows}

    def seal(self, topic: str, *, max_records: int, max_bytes: int, full_only: bool = False) -> int:
        """Group the topic's pending records, oldest first, into messages; returns how many.

        With `full_only` a trailing partial batch stays pending to fill up further.
        """
        sealed = 0
        with self._lock, self._transaction():
            rows: list[tuple[int, bytes]] = self._conn.execute(
                "SELECT id, payload FROM pending_records WHERE topic = ? ORDER BY id",
                (topic,),
            ).fetchall()
            batches = list(_split(rows, max_records=max_records, max_bytes=max_bytes))
            if full_only and batches and len(batches[-1]) < max_records:
                batches.pop()
            now = time.time()
            last_id = 0
            for batch in batches:
                payloads = [payload for _, payload in batch]
                self._conn.execute(
                    "INSERT INTO messages (topic, payload, record_count, retain, sealed_at)"
                    " VALUES (?, ?, ?, 0, ?)",
                    (topic, batch_payload(payloads), len(payloads), now),
                )
                sealed += 1
                last_id = batch[-1][0]
            if sealed:
                self._conn.execute(
                    "DELETE FROM pending_records WHERE topic = ? AND id <= ?", (topic, last_id)
                )
        return sealed

    def messages_after(self, last_id: int, limit: int) -> list[OutboxMessage]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, topic, payload, record_count, retain FROM messages"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, limit),
            ).fetchall()
        return [OutboxMessage(int(i), str(t), bytes(p), int(n), bool(r)) for i, t, p, n, r in rows]

    def acknowledge(self, message_ids: Iterable[int]) -> None:
        ids = [(message_id,) for message_id in message_ids]
        if not ids:
            return
        with self._lock, self._transaction():
            self._conn.executemany("DELETE FROM messages WHERE id = ?", ids)

    def reject(self, message_id: int, reason: str) -> None:
        """Park a message the broker refused (for example not authorised): resending is futile."""
        with self._lock, self._transaction():
            self._conn.execute(
                "INSERT INTO rejected_messages (id, topic, payload, record_count, reason,"
                " rejected_at) SELECT id, topic, payload, record_count, ?, ? FROM messages"
                " WHERE id = ?",
                (reason, time.time(), message_id),
            )
            self._conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def stats(self) -> OutboxStats:
        with self._lock:
            pending = self._conn.execute("SELECT count(*) FROM pending_records").fetchone()[0]
            messages = self._conn.execute("SELECT count(*) FROM messages").fetchone()[0]
            rejected = self._conn.execute("SELECT count(*) FROM rejected_messages").fetchone()[0]
        return OutboxStats(int(pending), int(messages), int(rejected))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def batch_payload(payloads: Sequence[bytes]) -> bytes:
    """The contract's batch form, built from already serialised records without re-encoding."""
    return b'{"records":[' + b",".join(payloads) + b"]}"


def _split(
    rows: Sequence[tuple[int, bytes]], *, max_records: int, max_bytes: int
) -> Iterable[Sequence[tuple[int, bytes]]]:
    start = 0
    size = 0
    for index, (_, payload) in enumerate(rows):
        full = index - start >= max_records or (
            index > start and size + len(payload) + 1 > max_bytes
        )
        if full:
            yield rows[start:index]
            start, size = index, 0
        size += len(payload) + 1
    if start < len(rows):
        yield rows[start:]
