"""`swapfleet devices provision`: files Mosquitto accepts, a password shown once that works."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.provisioning import mosquitto_files
from app.provisioning.cli import devices_cli
from devices.client import BrokerSettings, DeviceClient, PublishOptions
from devices.contract import RecordKind
from tests.fixtures.mqtt_collector import Collector
from tests.fixtures.private_mosquitto import PrivateMosquitto


def read_password_entries(path: Path) -> dict[str, str]:
    """The password file as Mosquitto reads it: username -> encoded hash."""
    entries = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            username, encoded = line.split(":", 1)
            entries[username] = encoded
    return entries


runner = CliRunner()


def run_provision(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        devices_cli,
        [
            "provision",
            *args,
            "--passwd-file",
            str(tmp_path / "passwd"),
            "--acl-file",
            str(tmp_path / "acl"),
        ],
    )
    return result.exit_code, result.stdout, result.stderr


def printed_password(stdout: str) -> str:
    match = re.search(r"^password: (\S+)$", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def test_provisioned_station_password_is_printed_once_and_connects(tmp_path: Path) -> None:
    code, out, _ = run_provision(tmp_path, "--ingest", "ingest")
    assert code == 0
    ingest_password = printed_password(out)
    code, out, err = run_provision(tmp_path, "--station", "ST-9")
    assert code == 0, err
    password = printed_password(out)
    assert "username: station-ST-9" in out
    assert out.count(password) == 1
    assert password not in (tmp_path / "passwd").read_text()
    assert password not in (tmp_path / "acl").read_text()

    broker = PrivateMosquitto(tmp_path, passwd_file=tmp_path / "passwd", acl_file=tmp_path / "acl")
    broker.start()
    try:
        watcher = Collector(
            broker.port, "swapfleet/v1/#", username="ingest", password=ingest_password
        ).start()
        client = DeviceClient.for_station(
            "ST-9",
            BrokerSettings(port=broker.port, username="station-ST-9", password=password),
            options=PublishOptions(batch_interval_s=0.05),
        )
        client.start()
        assert client.wait_connected(10)
        client.publish_records(RecordKind.charging, [{"n": 1}])
        assert client.flush(10)
        client.close()
        assert watcher.wait_until(
            lambda c: len(c.records("swapfleet/v1/stations/ST-9/charging")) == 1, 5
        )
        watcher.stop()
    finally:
        broker.kill()


def test_provisioning_again_rotates_the_password_and_keeps_one_acl_block(tmp_path: Path) -> None:
    _, first, _ = run_provision(tmp_path, "--vehicle", "WVWZZZ1JZXW000009")
    _, second, _ = run_provision(tmp_path, "--vehicle", "WVWZZZ1JZXW000009")
    run_provision(tmp_path, "--station", "ST-1")
    old, new = printed_password(first), printed_password(second)
    assert old != new

    entries = read_password_entries(tmp_path / "passwd")
    assert set(entries) == {"vehicle-WVWZZZ1JZXW000009", "station-ST-1"}
    stored = entries["vehicle-WVWZZZ1JZXW000009"]
    assert mosquitto_files.verify_password(new, stored)
    assert not mosquitto_files.verify_password(old, stored)

    acl = (tmp_path / "acl").read_text()
    assert acl.count("user vehicle-WVWZZZ1JZXW000009") == 1
    assert "topic write swapfleet/v1/vehicles/WVWZZZ1JZXW000009/#" in acl
    assert "topic write swapfleet/v1/stations/ST-1/#" in acl


@pytest.mark.parametrize(
    "args",
    [
        ["--station", "ST/1"],
        ["--station", "#"],
        ["--vehicle", "VIN\nuser admin"],
        ["--station", "A", "--vehicle", "B"],
        [],
    ],
)
def test_provision_refuses_bad_or_ambiguous_identities(tmp_path: Path, args: list[str]) -> None:
    code, out, _ = run_provision(tmp_path, *args)
    assert code == 2
    assert "password" not in out
    assert not (tmp_path / "passwd").exists()


def test_generated_acl_keeps_a_hand_written_header(tmp_path: Path) -> None:
    (tmp_path / "acl").write_text("# site notes\npattern read $SYS/broker/uptime\n")
    run_provision(tmp_path, "--station", "ST-2")
    text = (tmp_path / "acl").read_text()
    assert text.startswith("# site notes\npattern read $SYS/broker/uptime\n")
    assert "user station-ST-2\ntopic write swapfleet/v1/stations/ST-2/#" in text


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_hash_format_matches_mosquitto_passwd(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(reference), "u", "s3cret"], check=True)
    theirs = read_password_entries(reference)["u"]
    assert mosquitto_files.verify_password("s3cret", theirs)
    assert not mosquitto_files.verify_password("other", theirs)
    ours = mosquitto_files.hash_password("s3cret")
    assert ours.split("$")[1:3] == theirs.split("$")[1:3]  # same scheme and iterations
