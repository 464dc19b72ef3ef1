import os
import signal
import sys
import threading
import time
from pathlib import Path

from app.local.supervisor import ChildSpec, Supervisor, interrupt_on_sigterm


def python_child(name: str, code: str, pid_file: Path, *, ready_in_code: bool = False) -> ChildSpec:
    """A child that writes its pid file when ready: at once, or where `code` calls ready()
    (after it installed its signal handlers: a SIGTERM before that would kill it silently)."""
    script = (
        "import os, pathlib\n"
        f"def ready(): pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        + ("" if ready_in_code else "ready()\n")
    )
    return ChildSpec(name=name, argv=[sys.executable, "-c", script + code], env=dict(os.environ))


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); the supervisor reaps its children, so it would not stay.
    status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    return status != "Z"


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)


def run_until_sigterm(supervisor: Supervisor, pid_files: list[Path]) -> int:
    """Run the supervisor and send it SIGTERM once every child has written its pid."""

    def interrupt_when_started() -> None:
        for pid_file in pid_files:
            wait_for_file(pid_file)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    interrupt_on_sigterm()
    thread = threading.Thread(target=interrupt_when_started)
    thread.start()
    try:
        return supervisor.run()
    finally:
        thread.join()
        signal.signal(signal.SIGTERM, previous)


def test_when_one_child_dies_the_others_are_stopped_and_run_fails(tmp_path: Path) -> None:
    sleeper_pid = tmp_path / "sleeper.pid"
    supervisor = Supervisor(
        [
            python_child("sleeper", "import time; time.sleep(120)", sleeper_pid),
            python_child(
                "crasher", "import time; time.sleep(1); raise SystemExit(3)", tmp_path / "c.pid"
            ),
        ]
    )
    started = time.monotonic()
    assert supervisor.run() == 1
    assert time.monotonic() - started < 30
    assert not is_running(int(sleeper_pid.read_text()))


def test_sigterm_to_the_supervisor_stops_every_child_and_run_succeeds(tmp_path: Path) -> None:
    pids = [tmp_path / "a.pid", tmp_path / "b.pid"]
    supervisor = Supervisor([python_child(p.stem, "import time; time.sleep(120)", p) for p in pids])

    assert run_until_sigterm(supervisor, pids) == 0
    for pid_file in pids:
        assert not is_running(int(pid_file.read_text()))


def test_children_stop_in_reverse_order_each_after_the_later_one_has_exited(
    tmp_path: Path,
) -> None:
    # Each child notes when SIGTERM reached it and takes a while to exit, as the ingest does
    # while it commits; the broker started first must outlive everything started after it.
    log = tmp_path / "stops.log"
    code = (
        "import signal, time, pathlib\n"
        f"LOG = pathlib.Path({str(log)!r})\n"
        "def note(event):\n"
        "    with LOG.open('a') as f: f.write(f'{NAME} {event}\\n')\n"
        "def stop(*_):\n"
        "    note('term'); time.sleep(0.5); note('exit')\n"
        "    raise SystemExit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "ready()\n"
        "time.sleep(120)\n"
    )
    names = ["broker", "api", "ingest", "simulator"]
    pids = [tmp_path / f"{n}.pid" for n in names]
    supervisor = Supervisor(
        [
            python_child(n, f"NAME = {n!r}\n" + code, p, ready_in_code=True)
            for n, p in zip(names, pids, strict=True)
        ]
    )

    assert run_until_sigterm(supervisor, pids) == 0
    events = [line.split()[:2] for line in log.read_text().splitlines()]
    expected = [[n, e] for n in reversed(names) for e in ("term", "exit")]
    assert events == expected
