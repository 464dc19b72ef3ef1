"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine), so they are checked
against the code they configure: service names, ports, settings names and CLI commands."""

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from app.core.config import Settings
from typer.testing import CliRunner

from app.cli import cli

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SETTINGS_VARIABLES = {f"SWAPFLEET_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def host_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    pairs = set()
    for mapping in service.get("ports", []):
        host, container = str(mapping).split(":")
        pairs.add((int(host), int(container)))
    return pairs


def api_environment(compose: dict[str, Any]) -> dict[str, str]:
    env = compose["services"]["api"]["environment"]
    assert isinstance(env, dict), "environment as a mapping, so names can be checked"
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_postgres_mosquitto_api_and_ingest(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "mosquitto", "api", "ingest"}


def test_compose_broker_uses_the_shipped_config_with_a_large_queue(
    compose: dict[str, Any],
) -> None:
    mosquitto = compose["services"]["mosquitto"]
    assert "./deploy/mosquitto:/mosquitto/config:ro" in mosquitto["volumes"]
    conf = (REPO_ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    queued = re.search(r"^max_queued_messages (\d+)", conf, re.MULTILINE)
    assert queued is not None
    # Ten minutes at the design rate of 5,000 messages/s stated in the conf.
    assert int(queued.group(1)) >= 5_000 * 600
    assert re.search(r"^allow_anonymous false", conf, re.MULTILINE)


def test_compose_publishes_the_standard_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert (5432, 5432) in host_ports(services["postgres"])
    assert (1883, 1883) in host_ports(services["mosquitto"])
    api_port = int(api_environment(compose)["SWAPFLEET_API_PORT"])
    assert (8000, api_port) in host_ports(services["api"])


def test_every_swapfleet_variable_in_compose_is_a_settings_field() -> None:
    named = set(re.findall(r"SWAPFLEET_[A-Z0-9_]+", COMPOSE_FILE.read_text()))
    assert named, "the compose file configures the api through SWAPFLEET_* variables"
    assert named <= SETTINGS_VARIABLES, named - SETTINGS_VARIABLES


def test_compose_environment_is_accepted_by_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in api_environment(compose).items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.environment == "production"
    assert settings.database_url is not None


def test_api_reaches_the_compose_database_and_broker_by_service_name(
    compose: dict[str, Any],
) -> None:
    env = api_environment(compose)
    postgres = compose["services"]["postgres"]["environment"]
    db = urlsplit(env["SWAPFLEET_DATABASE_URL"])
    assert db.scheme == "postgresql"
    assert (db.hostname, db.port) == ("postgres", 5432)
    assert (db.username, db.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert db.path == "/" + postgres["POSTGRES_DB"]
    mqtt = urlsplit(env["SWAPFLEET_MQTT_URL"])
    assert (mqtt.hostname, mqtt.port) == ("mosquitto", 1883)
    assert set(compose["services"]["api"]["depends_on"]) == {"postgres", "mosquitto"}


def test_api_service_is_built_from_the_repository_dockerfile(compose: dict[str, Any]) -> None:
    assert compose["services"]["api"]["build"] == "."
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (REPO_ROOT / path).exists(), f"Dockerfile copies missing {path}"


def swapfleet_invocations(shell_command: str) -> list[list[str]]:
    return [
        shlex.split(part)[1:]
        for part in shell_command.split("&&")
        if shlex.split(part)[0] == "swapfleet"
    ]


def test_compose_and_dockerfile_run_commands_the_cli_has(compose: dict[str, Any]) -> None:
    command = compose["services"]["api"]["command"]
    assert command[:2] == ["sh", "-c"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert yaml.safe_load(cmd.group(1)) == command, "image and compose start the api alike"

    invocations = swapfleet_invocations(command[2])
    assert [args[:2] for args in invocations] == [["db", "upgrade"], ["api", "--host"]]
    runner = CliRunner()
    for args in invocations:
        # --help after the real arguments: click parses the options, then prints help.
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
