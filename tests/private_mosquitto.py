"""A Mosquitto of the test's own, on a free port, that the test can stop, kill and restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from app.local.local_broker import free_port

MOSQUITTO = os.environ.get("SWAPFLEET_TEST_MOSQUITTO", "/usr/sbin/mosquitto")
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "mosquitto.conf"


class PrivateMosquitto:
    def __init__(
        self,
        workdir: Path,
        *,
        passwd_file: Path | None = None,
        acl_file: Path | None = None,
        max_inflight_messages: int = 20,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {workdir}/",
            "max_queued_messages 100000",
            f"max_inflight_messages {max_inflight_messages}",
        ]
        if passwd_file is not None:
            lines += ["allow_anonymous false", f"password_file {passwd_file}"]
        else:
            lines.append("allow_anonymous true")
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
        if os.geteuid() == 0:
            # Started as root Mosquitto drops to its own user before opening the password
            # file, which the test wrote as root into a private directory.
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")

    @classmethod
    def with_shipped_config(
        cls, workdir: Path, passwd_file: Path, acl_file: Path
    ) -> PrivateMosquitto:
        """deploy/mosquitto/mosquitto.conf as shipped, but for its port, paths and log."""
        broker = cls(workdir)
        replaced = {
            "listener": f"listener {broker.port} 127.0.0.1",
            "password_file": f"password_file {passwd_file}",
            "acl_file": f"acl_file {acl_file}",
            "persistence_location": f"persistence_location {workdir}/",
            "log_dest": "log_dest stdout",
        }
        lines = []
        for line in SHIPPED_CONFIG.read_text().splitlines():
            key = line.split(" ", 1)[0]
            lines.append(replaced.get(key, line))
        if os.geteuid() == 0:
            lines.append("user root")
        broker.conf.write_text("\n".join(lines) + "\n")
        return broker

    def start(self) -> None:
        assert self._process is None, "already running"
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def stop(self) -> None:
        """A clean shutdown: Mosquitto saves its persistence file."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def reload(self) -> None:
        """SIGHUP: Mosquitto rereads its password and ACL files."""
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)
        time.sleep(0.3)

    def _end(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        self._process.send_signal(sig)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
