"""The fleet publishing through the real device clients to the local Mosquitto."""

import uuid
from collections import Counter
from pathlib import Path

from devices.client import BrokerSettings, PublishOptions
from devices.contract import RecordKind, parse_topic
from simulators.backend import MqttDeviceSink
from simulators.fleet import Fleet, FleetConfig
from tests.fixtures.mqtt_collector import Collector


def test_every_simulated_record_reaches_the_broker_on_its_devices_topic(tmp_path: Path) -> None:
    prefix = f"simtest-{uuid.uuid4().hex[:8]}/v1"
    collector = Collector(1883, f"{prefix}/#").start()
    sink = MqttDeviceSink(
        BrokerSettings(port=1883),
        outbox_dir=tmp_path,
        prefix=prefix,
        options=PublishOptions(batch_max_records=200, batch_interval_s=0.2),
        buffer_records=50,
    )
    config = FleetConfig(stations=1, vehicles=4, days=0.25, seed=8, slots_per_station=6)
    fleet = Fleet(config, sink)
    try:
        stats = fleet.run()
        assert sink.close(timeout=60.0)
        expected = {k: v for k, v in stats.records.items() if k != RecordKind.status.value}

        def received() -> Counter[str]:
            counts: Counter[str] = Counter()
            for message in collector.snapshot():
                identity = parse_topic(message.topic, prefix)
                assert identity is not None
                if identity.kind is not RecordKind.status:
                    counts[identity.kind.value] += len(message.records())
            return counts

        assert collector.wait_until(lambda _: received() == expected, timeout=30.0), (
            received(),
            expected,
        )
        assert expected[RecordKind.vehicle.value] > 0
        assert expected[RecordKind.charging.value] > 0
        vins = {v.vin for v in fleet.vehicles}
        for message in collector.snapshot():
            identity = parse_topic(message.topic, prefix)
            assert identity is not None
            if identity.kind is RecordKind.vehicle:
                assert identity.vin in vins
            else:
                assert identity.station_code == fleet.stations[0].code
    finally:
        collector.stop()
