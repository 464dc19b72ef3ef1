"""A private broker for `swapfleet up` when no broker is configured: Mosquitto if it is
installed, otherwise the embedded Python broker (app/local/embedded_broker.py, MQTT 3.1.1 only).

Either listens on loopback only and allows anonymous clients: it is for one machine's demo, not
for devices in the field (those use deploy/mosquitto/ with per-device credentials).
"""

import getpass
import importlib.util
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from app.local.supervisor import ChildSpec
from devices.contract import MqttProtocol

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
DEFAULT_MQTT_PORT = 1883


class BrokerUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class LocalBroker:
    spec: ChildSpec
    url: str
    port: int
    # What the ingest and the simulator must speak to it (SWAPFLEET_MQTT_PROTOCOL).
    protocol: MqttProtocol
    # One line for the person who ran `up`: which broker, where.
    description: str


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def embedded_broker_installed() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def broker_config(port: int, persistence_dir: Path) -> str:
    # Queue limits as in deploy/mosquitto/mosquitto.conf: an offline ingest session must not
    # silently lose what Mosquitto's default of 1,000 queued messages would drop.
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            # Stay the user who ran `up` (as root Mosquitto would switch to a `mosquitto` user
            # that cannot write our data folder).
            f"user {getpass.getuser()}",
            # Anonymous on loopback, for one machine's demo: without usernames there is no
            # use_username_as_clientid (deploy/mosquitto/mosquitto.conf), which refuses
            # clients without one. A deployment runs the shipped configuration.
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {persistence_dir}/",
            "autosave_interval 30",
            "max_queued_messages 3000000",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


def local_port() -> int:
    # Keep the well-known port when it is free, so devices on this machine find the broker.
    return DEFAULT_MQTT_PORT if port_is_free(DEFAULT_MQTT_PORT) else free_port()


def prepare_local_broker(data_dir: Path, env: dict[str, str]) -> LocalBroker:
    binary = find_mosquitto()
    if binary is not None:
        return prepare_mosquitto(binary, data_dir, env)
    if embedded_broker_installed():
        return prepare_embedded_broker(env)
    raise BrokerUnavailable(
        "no MQTT broker: install Mosquitto (apt-get install mosquitto), or the embedded Python "
        "broker for a demo (pip install 'swapfleet[embedded-broker]'), or set "
        "SWAPFLEET_MQTT_URL to a broker that speaks MQTT 5"
    )


def prepare_mosquitto(binary: str, data_dir: Path, env: dict[str, str]) -> LocalBroker:
    workdir = (data_dir / "mosquitto").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = local_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(broker_config(port, workdir))
    spec = ChildSpec(name="mqtt-broker", argv=[binary, "-c", str(conf)], env=env)
    url = f"mqtt://127.0.0.1:{port}"
    return LocalBroker(
        spec=spec,
        url=url,
        port=port,
        protocol="5",
        description=f"private Mosquitto on {url}, data in {workdir}",
    )


def prepare_embedded_broker(env: dict[str, str]) -> LocalBroker:
    port = local_port()
    argv = [sys.executable, "-m", "app.local.embedded_broker", "--port", str(port)]
    url = f"mqtt://127.0.0.1:{port}"
    return LocalBroker(
        spec=ChildSpec(name="mqtt-broker", argv=argv, env=env),
        url=url,
        port=port,
        protocol="3.1.1",
        description=(
            f"embedded Python broker (amqtt, MQTT 3.1.1, demo only) on {url}; no Mosquitto "
            "found, and this one keeps its queues in memory only"
        ),
    )
