"""The device outbox on its own: batching, ordering, durability, acknowledgement."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from devices.outbox import Outbox


def payloads(start: int, count: int) -> list[bytes]:
    return [orjson.dumps({"seq": n}) for n in range(start, start + count)]


def seqs(payload: bytes) -> list[int]:
    return [r["seq"] for r in orjson.loads(payload)["records"]]


def test_seal_splits_by_record_count_and_keeps_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append("t/a", payloads(0, 25))
    assert outbox.seal("t/a", max_records=10, max_bytes=1 << 20) == 3
    messages = outbox.messages_after(0, 10)
    assert [seqs(m.payload) for m in messages] == [
        list(range(10)),
        list(range(10, 20)),
        list(range(20, 25)),
    ]
    assert [m.record_count for m in messages] == [10, 10, 5]
    assert outbox.stats().pending_records == 0


def test_seal_full_only_leaves_the_partial_tail_pending(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append("t/a", payloads(0, 25))
    assert outbox.seal("t/a", max_records=10, max_bytes=1 << 20, full_only=True) == 2
    assert outbox.pending_topics()["t/a"][0] == 5
    outbox.append("t/a", payloads(25, 5))
    assert outbox.seal("t/a", max_records=10, max_bytes=1 << 20, full_only=True) == 1
    assert seqs(outbox.messages_after(0, 10)[-1].payload) == list(range(20, 30))


def test_seal_respects_the_byte_limit_but_always_sends_one_record(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    big = [orjson.dumps({"seq": n, "pad": "x" * 400}) for n in range(6)]
    outbox.append("t/a", big)
    outbox.seal("t/a", max_records=100, max_bytes=1000)
    counts = [m.record_count for m in outbox.messages_after(0, 10)]
    assert counts == [2, 2, 2]
    assert all(len(m.payload) <= 1000 for m in outbox.messages_after(0, 10))

    outbox.append("t/b", [orjson.dumps({"seq": 9, "pad": "y" * 5000})])
    outbox.seal("t/b", max_records=100, max_bytes=1000)
    assert outbox.messages_after(0, 10)[-1].record_count == 1


def test_topics_are_sealed_separately(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append("t/a", payloads(0, 3))
    outbox.append("t/b", payloads(100, 2))
    outbox.append("t/a", payloads(3, 2))
    assert {t: c for t, (c, _) in outbox.pending_topics().items()} == {"t/a": 5, "t/b": 2}
    outbox.seal("t/a", max_records=10, max_bytes=1 << 20)
    (message,) = outbox.messages_after(0, 10)
    assert (message.topic, seqs(message.payload)) == ("t/a", [0, 1, 2, 3, 4])
    assert set(outbox.pending_topics()) == {"t/b"}


def test_unacknowledged_messages_survive_reopening_and_acked_ones_do_not(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path)
    outbox.append("t/a", payloads(0, 30))
    outbox.seal("t/a", max_records=10, max_bytes=1 << 20)
    outbox.append("t/a", payloads(30, 3))  # still pending, not sealed
    first, second, third = outbox.messages_after(0, 10)
    outbox.acknowledge([first.id])
    outbox.close()

    reopened = Outbox(path)
    assert [m.id for m in reopened.messages_after(0, 10)] == [second.id, third.id]
    assert reopened.pending_topics()["t/a"][0] == 3
    reopened.close()


def test_a_second_process_cannot_open_the_same_outbox(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    first = Outbox(path)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        Outbox(path)
    first.close()
    Outbox(path).close()


def test_rejected_message_is_parked_not_resent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append("t/a", payloads(0, 2))
    outbox.seal("t/a", max_records=10, max_bytes=1 << 20)
    (message,) = outbox.messages_after(0, 10)
    outbox.reject(message.id, "Not authorized")
    stats = outbox.stats()
    assert (stats.messages, stats.rejected_messages) == (0, 1)
    assert outbox.messages_after(0, 10) == []
