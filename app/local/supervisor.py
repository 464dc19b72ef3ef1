"""Runs the processes of `swapfleet up` side by side and stops them together.

Each process is a `swapfleet <command>` child configured only through SWAPFLEET_* variables,
so what `up` runs is exactly what an operator would run by hand. When one child exits on its
own the others are stopped too: a half-running backend is worse than a stopped one.
"""

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
# Per child: the ingest commits what it holds and the simulator drains its buffers.
STOP_TIMEOUT_S = 20.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


def swapfleet_command(*args: str) -> list[str]:
    # `python -m app.cli` rather than the `swapfleet` script: it works uninstalled, from a checkout.
    return [sys.executable, "-m", "app.cli", *args]


def interrupt_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C, so `finally` blocks (stopping the database) run."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


class Supervisor:
    def __init__(self, specs: Sequence[ChildSpec]) -> None:
        self._specs = list(specs)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def run(self) -> int:
        """Start every child and block; 0 after Ctrl-C or SIGTERM, 1 if a child died."""
        try:
            for spec in self._specs:
                # Its own process group: Ctrl-C in a terminal signals the whole foreground group
                # at once, which stopped the broker while the ingest and the simulator were
                # still draining into it. Only `up` gets it, and stops them in order.
                self._children[spec.name] = subprocess.Popen(
                    list(spec.argv), env=dict(spec.env), process_group=0
                )
                logger.info(
                    "event=child_started name=%s pid=%d", spec.name, self._children[spec.name].pid
                )
            return self._watch()
        except KeyboardInterrupt:
            logger.info("event=stopping reason=signal")
            return 0
        finally:
            self._stop_all()

    def _watch(self) -> int:
        while True:
            for name, child in self._children.items():
                code = child.poll()
                if code is not None:
                    logger.error("event=child_exited name=%s code=%d", name, code)
                    return 1
            time.sleep(POLL_INTERVAL_S)

    def _stop_all(self) -> None:
        """Stop the children in the reverse order of their start, each after the one started
        after it has exited: the simulator drains into the ingest's broker, the ingest commits
        what it holds while the database and the broker are still there."""
        # A second Ctrl-C must not abandon children half-stopped.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
        try:
            for name, child in reversed(self._children.items()):
                if child.poll() is None:
                    child.terminate()
                try:
                    child.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    logger.warning("event=child_killed name=%s", name)
                    child.kill()
                    child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
