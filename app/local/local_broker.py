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


@dataclass(frozen=True)
class MosquittoConfig:
    """A private Mosquitto on loopback: `swapfleet up`'s broker, the test session's, the tests'
    own (tests/fixtures/private_mosquitto.py) and the ingest benchmark's; they differ only in
    these fields."""

    port: int
    # None: no persistence (a benchmark's backlog stays in memory, no autosave competes).
    persistence_dir: Path | None
    # Queue limits as in deploy/mosquitto/mosquitto.conf: an offline ingest session must not
    # silently lose what Mosquitto's default of 1,000 queued messages would drop. 0: no limit.
    max_queued_messages: int = 3_000_000
    max_inflight_messages: int = 1000
    # None: Mosquitto's default (30 minutes).
    autosave_interval_s: int | None = 30
    # None: anonymous clients, for one machine's demo or a test. Without usernames there is
    # no use_username_as_clientid (deploy/mosquitto/mosquitto.conf), which refuses clients
    # without one; a deployment runs the shipped configuration.
    password_file: Path | None = None
    acl_file: Path | None = None
    # Errors and warnings only; a test keeps Mosquitto's notices to explain its failures.
    quiet: bool = True

    def render(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            # Stay the user who started it: as root Mosquitto would switch to a `mosquitto`
            # user that can neither write our data folder nor read a password file a test
            # wrote as root into a private directory.
            f"user {getpass.getuser()}",
        ]
        if self.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.persistence_dir is None:
            lines.append("persistence false")
        else:
            lines += ["persistence true", f"persistence_location {self.persistence_dir}/"]
            if self.autosave_interval_s is not None:
                lines.append(f"autosave_interval {self.autosave_interval_s}")
        lines += [
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            f"max_inflight_messages {self.max_inflight_messages}",
            "log_dest stdout",
        ]
        if self.quiet:
            lines += ["log_type error", "log_type warning"]
        return "\n".join(lines) + "\n"


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
    conf.write_text(MosquittoConfig(port, workdir).render())
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
