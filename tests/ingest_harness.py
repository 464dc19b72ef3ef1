"""What the ingest tests share: committed seed data, an in-process ingest, a publisher, and
private Mosquitto / PostgreSQL servers that fault tests can stop and start."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from app.core import clock
from app.core.config import Settings
from app.local.local_broker import free_port
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.ingest.client import IngestService
from app.models import OrgRole
from tests.fixtures import factories

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Fleet:
    station_code: str
    other_station_code: str
    slots: int
    serials: list[str]
    other_station_serial: str
    vin: str
    vehicle_serial: str
    other_vin: str
    oem_code: str
    other_oem_code: str


def seed_fleet(engine: Engine, batteries: int = 3) -> Fleet:
    """Committed rows (the ingest runs on its own connection), unique per call."""
    with Session(engine) as session, session.begin():
        operator = factories.make_org(session)
        oem = factories.make_org(session, OrgRole.oem)
        other_oem = factories.make_org(session, OrgRole.oem)
        pack = factories.make_pack_type(session)
        station = factories.make_station(session, operator, slots=max(4, batteries))
        other_station = factories.make_station(session, operator, slots=2)
        serials = [
            factories.make_battery(
                session, pack, operator, oem=oem, slot=factories.slot_of(session, station, n + 1)
            ).serial
            for n in range(batteries)
        ]
        elsewhere = factories.make_battery(
            session, pack, operator, oem=oem, slot=factories.slot_of(session, other_station, 1)
        )
        model = factories.make_vehicle_model(session, oem, pack)
        vehicle = factories.make_vehicle(session, model)
        other_vehicle = factories.make_vehicle(
            session, factories.make_vehicle_model(session, other_oem, pack)
        )
        in_vehicle = factories.make_battery(session, pack, operator, oem=oem, vehicle=vehicle)
        return Fleet(
            station_code=station.code,
            other_station_code=other_station.code,
            slots=max(4, batteries),
            serials=serials,
            other_station_serial=elsewhere.serial,
            vin=vehicle.vin,
            vehicle_serial=in_vehicle.serial,
            other_vin=other_vehicle.vin,
            oem_code=oem.code,
            other_oem_code=other_oem.code,
        )


def ts(offset_s: float = 0.0) -> str:
    base = clock.now().replace(microsecond=0) - timedelta(hours=1)
    return (base + timedelta(seconds=offset_s)).isoformat()


def charging(serial: str, offset_s: float, slot: int = 1, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "battery_serial": serial,
        "slot": slot,
        "ts": ts(offset_s),
        "soc_pct": 40.0 + offset_s / 100,
        "voltage_v": 520.0,
        "current_a": 150.0,
        "power_kw": 78.0,
        "temp_c_min": 24.0,
        "temp_c_max": 31.0,
        "energy_kwh": offset_s / 60,
    }
    record.update(overrides)
    return record


def unique_prefix() -> str:
    return f"sftest-{uuid.uuid4().hex[:10]}/v1"


def ingest_settings(database_url: str, mqtt_url: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "mqtt_url": mqtt_url,
        "mqtt_topic_prefix": prefix,
        "ingest_client_id": f"ingest-{uuid.uuid4().hex[:8]}",
        "ingest_session_expiry_s": 300,
        "ingest_batch_window_s": 0.05,
        "ingest_metrics_port": None,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_ingest(settings: Settings, **kwargs: Any) -> Iterator[IngestService]:
    service = IngestService(settings, **kwargs)
    service.start()
    try:
        assert service.subscribed.wait(10), "ingest did not subscribe"
        yield service
    finally:
        service.stop()


class Publisher:
    """A device: QoS 1 publishes, each confirmed by the broker before `publish` returns."""

    def __init__(
        self,
        port: int = 1883,
        client_id: str | None = None,
        protocol: MQTTProtocolVersion = mqtt.MQTTv5,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def dead_letter_reasons(database_url: str, prefix: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT reason FROM dead_letters WHERE topic LIKE %s ORDER BY id", (prefix + "/%",)
        ).fetchall()
    return [r[0] for r in rows]


def count(database_url: str, query: str, params: tuple[Any, ...] = ()) -> int:
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            row = conn.execute(query, params).fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


class PrivateBroker:
    """A Mosquitto on a free port with persistence and unbounded queues, as in production."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sf-mosq-"))
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "autosave_interval 1\n"
            "log_dest stderr\n"
        )
        if os.geteuid() == 0 and _user_exists("mosquitto"):
            # Started as root, mosquitto drops to this user and must own its persistence.
            shutil.chown(self.dir, "mosquitto")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "ab"),  # noqa: SIM115
        )
        assert wait_for(lambda: _port_open(self.port), timeout=10), "mosquitto did not start"

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM: mosquitto writes its persistence file on the way out.
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """initdb + pg_ctl from the system PostgreSQL, run as the postgres user (we are root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sf-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        os.chmod(self.dir, 0o777)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        user = "postgres" if os.geteuid() == 0 else None
        subprocess.run(args, check=True, capture_output=True, user=user, timeout=60)

    def start(self) -> None:
        self._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.dir / "log"),
             "-o", f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off", "start"]
        )  # fmt: skip

    def stop(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"])

    def cleanup(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def spawn_ingest(
    database_url: str, mqtt_url: str, prefix: str, client_id: str, **env: str
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "SWAPFLEET_ENVIRONMENT": "test",
        "SWAPFLEET_DATABASE_URL": database_url,
        "SWAPFLEET_MQTT_URL": mqtt_url,
        "SWAPFLEET_MQTT_TOPIC_PREFIX": prefix,
        "SWAPFLEET_INGEST_CLIENT_ID": client_id,
        "SWAPFLEET_INGEST_METRICS_PORT": "0",
        "SWAPFLEET_INGEST_SESSION_EXPIRY_S": "600",
        "SWAPFLEET_LOG_LEVEL": "WARNING",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.ingest", "run"],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
