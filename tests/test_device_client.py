"""The device publishing client against real Mosquitto brokers of the tests' own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from devices.client import BrokerSettings, DeviceClient, PublishOptions
from devices.contract import ChargingSample, RecordKind
from tests.fixtures.mqtt_collector import Collector
from tests.fixtures.private_mosquitto import PrivateMosquitto, free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    instance = PrivateMosquitto(tmp_path)
    instance.start()
    yield instance
    instance.kill()


def records(start: int, count: int) -> list[dict[str, object]]:
    return [{"seq": n, "ts": "2025-01-01T00:00:00+00:00"} for n in range(start, start + count)]


def station_client(port: int, code: str, tmp_path: Path, **options: object) -> DeviceClient:
    return DeviceClient.for_station(
        code,
        BrokerSettings(port=port),
        outbox_path=tmp_path / f"outbox-{code}.sqlite",
        options=PublishOptions(**options),  # type: ignore[arg-type]
    )


def delivered_seqs(collector: Collector, topic: str) -> list[int]:
    return [int(r["seq"]) for r in collector.records(topic)]


def first_occurrences(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    order = []
    for seq in seqs:
        if seq not in seen:
            seen.add(seq)
            order.append(seq)
    return order


def test_records_published_during_broker_outage_arrive_after_restart_in_order_exactly_once(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    topic = "swapfleet/v1/stations/OUT1/charging"
    collector = Collector(broker.port, topic, persistent=True).start()
    client = station_client(
        broker.port,
        "OUT1",
        tmp_path,
        batch_max_records=50,
        batch_interval_s=0.2,
        reconnect_min_delay_s=1,
        reconnect_max_delay_s=2,
    )
    client.start()
    assert client.wait_connected(10)
    client.publish_records(RecordKind.charging, records(0, 500))
    assert client.flush(20)
    assert collector.wait_until(lambda c: len(c.records(topic)) == 500, 10)

    broker.stop()
    deadline = time.monotonic() + 10
    while client.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.connected
    for start in range(500, 3000, 100):
        client.publish_records(RecordKind.charging, records(start, 100))
    time.sleep(0.5)
    during = client.stats()
    assert during.pending_records + during.outbox_messages > 0
    assert during.inflight == 0  # nothing is handed to paho while disconnected

    broker.start()
    assert client.flush(30), client.stats()
    assert collector.wait_until(lambda c: len(delivered_seqs(c, topic)) >= 3000, 20)
    time.sleep(0.5)  # anything resent after its ack would show up now

    # The broker may redeliver to the collector what it had in flight to it at the stop
    # (flagged DUP on that hop); what the device published arrives exactly once.
    seqs = [int(r["seq"]) for r in collector.records(topic, dups=False)]
    counts = Counter(seqs)
    assert set(counts) == set(range(3000))
    assert max(counts.values()) == 1, "the device sent a record twice"
    assert seqs == sorted(seqs)
    stats = client.stats()
    assert (stats.pending_records, stats.outbox_messages, stats.inflight) == (0, 0, 0)
    client.close()
    collector.stop()


def test_records_survive_a_broker_killed_mid_stream_in_order(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    topic = "swapfleet/v1/stations/KIL1/charging"
    collector = Collector(broker.port, topic).start()
    # The client's first reconnect comes two seconds after the kill; the test resubscribes
    # well before, so nothing the client republishes goes to an empty broker.
    client = station_client(
        broker.port,
        "KIL1",
        tmp_path,
        batch_max_records=20,
        batch_interval_s=0.05,
        reconnect_min_delay_s=2,
        reconnect_max_delay_s=2,
    )
    client.start()
    assert client.wait_connected(10)

    total = 6000

    def produce() -> None:
        for start in range(0, total, 20):
            client.publish_records(RecordKind.charging, records(start, 20))
            time.sleep(0.002)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.3)
    broker.kill()
    collector.stop()
    time.sleep(0.3)
    broker.start()
    collector = Collector(broker.port, topic).start()
    producer.join()
    assert client.flush(40), client.stats()
    time.sleep(0.5)

    after = delivered_seqs(collector, topic)
    assert after, "nothing arrived after the restart"
    # Everything the first broker never acknowledged arrives after the restart, in order;
    # only records that were in flight at the kill may come twice.
    missing = set(range(after[0], total)) - set(after)
    assert not missing
    assert first_occurrences(after) == sorted(set(after))
    duplicates = sum(Counter(after).values()) - len(set(after))
    assert duplicates <= 20 * 20  # at most one window of 20 messages of 20 records
    stats = client.stats()
    assert (stats.pending_records, stats.outbox_messages) == (0, 0)
    client.close()
    collector.stop()


def test_unsent_records_stay_on_disk_and_go_out_from_the_next_process(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    topic = "swapfleet/v1/stations/DSK1/charging"
    collector = Collector(broker.port, topic).start()
    outbox = tmp_path / "station.sqlite"
    closed_port = free_port()  # nothing listens there: the broker is "unreachable"
    offline = DeviceClient.for_station(
        "DSK1",
        BrokerSettings(port=closed_port),
        outbox_path=outbox,
        options=PublishOptions(batch_interval_s=0.05),
    )
    offline.start()
    offline.publish_records(RecordKind.charging, records(0, 250))
    assert not offline.flush(1.0)
    offline.close(timeout=0.5)

    online = DeviceClient.for_station("DSK1", BrokerSettings(port=broker.port), outbox_path=outbox)
    online.start()
    assert online.flush(20)
    assert collector.wait_until(lambda c: len(delivered_seqs(c, topic)) >= 250, 10)
    assert delivered_seqs(collector, topic) == list(range(250))
    online.close()
    collector.stop()


def test_batches_by_count_then_sends_the_remainder_after_the_interval(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    topic = "swapfleet/v1/stations/BAT1/charging"
    collector = Collector(broker.port, topic).start()
    client = station_client(
        broker.port, "BAT1", tmp_path, batch_max_records=10, batch_interval_s=1.5
    )
    client.start()
    assert client.wait_connected(10)
    client.publish_records(RecordKind.charging, records(0, 25))
    assert collector.wait_until(lambda c: len(c.snapshot()) >= 2, 1.0)
    assert len([m for m in collector.snapshot() if m.topic == topic]) == 2
    assert collector.wait_until(lambda c: len(c.records(topic)) == 25, 5)
    sizes = [len(m.records()) for m in collector.snapshot() if m.topic == topic]
    assert sizes == [10, 10, 5]
    client.close()
    collector.stop()


def test_pydantic_records_are_sent_as_the_contract_batch_form(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    topic = "swapfleet/v1/stations/PYD1/charging"
    collector = Collector(broker.port, topic).start()
    client = station_client(broker.port, "PYD1", tmp_path, batch_interval_s=0.05)
    client.start()
    sample = ChargingSample(
        battery_serial="BAT-1",
        slot=2,
        ts=datetime(2025, 3, 1, 12, tzinfo=UTC),
        soc_pct=55.5,
        voltage_v=400.0,
        current_a=50.0,
        power_kw=20.0,
        temp_c_min=21.0,
        temp_c_max=30.0,
        energy_kwh=3.2,
        firmware="1.2.3",
    )
    client.publish_records("charging", [sample, sample])
    assert client.flush(10)
    assert collector.wait_until(lambda c: len(c.records(topic)) == 2, 5)
    message = collector.snapshot()[0]
    document = orjson.loads(message.payload)
    assert document["records"][0]["ts"] == "2025-03-01T12:00:00Z"
    assert document["records"][0]["firmware"] == "1.2.3"
    assert ChargingSample.model_validate(document["records"][1]) == sample
    client.close()
    collector.stop()


def test_inflight_window_bounds_unacknowledged_messages(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    topic = "swapfleet/v1/stations/WIN1/charging"
    collector = Collector(broker.port, topic).start()
    client = station_client(
        broker.port,
        "WIN1",
        tmp_path,
        batch_max_records=1,
        batch_interval_s=0.0,
        inflight_window=3,
    )
    for start in range(0, 600, 50):
        client.publish_records(RecordKind.charging, records(start, 50))
    client.start()
    assert client.flush(30)
    stats = client.stats()
    assert stats.max_inflight_seen == 3
    assert stats.acked_messages == 600
    assert collector.wait_until(lambda c: len(c.records(topic)) >= 600, 10)
    assert delivered_seqs(collector, topic) == list(range(600))
    client.close()
    collector.stop()


def test_window_shrinks_to_the_brokers_receive_maximum(tmp_path: Path) -> None:
    broker = PrivateMosquitto(tmp_path, max_inflight_messages=4)
    broker.start()
    try:
        topic = "swapfleet/v1/stations/RCV1/charging"
        collector = Collector(broker.port, topic).start()
        client = station_client(
            broker.port,
            "RCV1",
            tmp_path,
            batch_max_records=1,
            batch_interval_s=0.0,
            inflight_window=50,
        )
        client.publish_records(RecordKind.charging, records(0, 400))
        client.start()
        assert client.flush(30)
        assert 1 < client.stats().max_inflight_seen <= 4
        assert collector.wait_until(lambda c: len(c.records(topic)) >= 400, 10)
        assert delivered_seqs(collector, topic) == list(range(400))
        client.close()
        collector.stop()
    finally:
        broker.kill()


def test_publish_refused_by_a_full_paho_queue_is_retried_without_loss(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    topic = "swapfleet/v1/stations/QUE1/charging"
    collector = Collector(broker.port, topic).start()
    # paho's own queue is smaller than the window: publish() answers MQTT_ERR_QUEUE_SIZE
    # quietly, and the client has to notice and try the same message again.
    client = station_client(
        broker.port,
        "QUE1",
        tmp_path,
        batch_max_records=1,
        batch_interval_s=0.0,
        inflight_window=20,
        paho_max_queued=2,
    )
    client.publish_records(RecordKind.charging, records(0, 300))
    client.start()
    assert client.flush(30)
    stats = client.stats()
    assert stats.publish_refusals > 0
    assert collector.wait_until(lambda c: len(c.records(topic)) >= 300, 10)
    assert delivered_seqs(collector, topic) == list(range(300))
    client.close()
    collector.stop()


DYING_STATION = textwrap.dedent(
    """
    import sys, time
    from devices.client import BrokerSettings, DeviceClient
    client = DeviceClient.for_station(sys.argv[1], BrokerSettings(port=int(sys.argv[2])))
    client.start()
    client.publish_status({"slots": [{"slot": 1, "state": "ready"}]})
    assert client.wait_connected(10)
    print("connected", flush=True)
    time.sleep(60)
    """
)


def test_last_will_marks_the_station_offline_when_its_process_dies(
    broker: PrivateMosquitto,
) -> None:
    code = f"LWT{uuid.uuid4().hex[:6]}"
    topic = f"swapfleet/v1/stations/{code}/status"
    collector = Collector(broker.port, topic).start()
    station = subprocess.Popen(
        [sys.executable, "-c", DYING_STATION, code, str(broker.port)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
    )
    try:
        assert station.stdout is not None
        assert station.stdout.readline().strip() == b"connected"
        # The client also announces itself online on every connect; find the status it sent.
        assert collector.wait_until(
            lambda c: any("slots" in orjson.loads(m.payload) for m in c.snapshot()), 15
        )
        online = next(
            orjson.loads(m.payload)
            for m in collector.snapshot()
            if "slots" in orjson.loads(m.payload)
        )
        assert online["online"] is True
        assert online["slots"] == [{"slot": 1, "state": "ready"}]
        station.kill()
        station.wait()
        assert collector.wait_until(
            lambda c: orjson.loads(c.snapshot()[-1].payload) == {"online": False}, 15
        )
    finally:
        if station.poll() is None:
            station.kill()
            station.wait()
    collector.stop()

    late = Collector(broker.port, topic).start()
    assert late.wait_until(lambda c: len(c.snapshot()) >= 1, 15)
    retained = late.snapshot()[0]
    assert retained.retain
    assert orjson.loads(retained.payload) == {"online": False}
    late.stop()


def test_close_publishes_an_offline_status(broker: PrivateMosquitto, tmp_path: Path) -> None:
    topic = "swapfleet/v1/stations/CLS1/status"
    collector = Collector(broker.port, topic).start()
    client = station_client(broker.port, "CLS1", tmp_path)
    client.start()
    assert client.wait_connected(10)
    client.close()
    assert collector.wait_until(lambda c: len(c.snapshot()) >= 2, 15)
    statuses = [orjson.loads(m.payload)["online"] for m in collector.snapshot()]
    assert statuses == [True, False]
    collector.stop()


def test_vehicle_client_refuses_station_record_kinds(tmp_path: Path) -> None:
    client = DeviceClient.for_vehicle("WVWZZZ1JZXW000001", outbox_path=None)
    with pytest.raises(ValueError, match="telemetry"):
        client.publish_records(RecordKind.charging, records(0, 1))
    client.close()


@pytest.mark.parametrize("identity", ["A/B", "A+", "#", "a\nuser admin", ""])
def test_identities_that_would_break_topics_or_acls_are_refused(identity: str) -> None:
    with pytest.raises(ValueError, match="not a valid"):
        DeviceClient.for_station(identity)
