"""README.md and .ci/run are checked against the code, so that they cannot drift from it."""

import os
import re
import subprocess
import tomllib
from pathlib import Path

from app.core.config import Settings
from app.local import demo

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text()
CI_RUN = REPO_ROOT / ".ci" / "run"


def readme_test_command() -> str:
    # The same rule as .ci/run's awk: the first line of the code block after the marker.
    after_marker = README.split("<!-- test-command", 1)[1]
    block = after_marker.split("```", 2)[1]
    return block.splitlines()[1]


def test_readme_test_command_installs_pinned_dev_dependencies_and_runs_pytest() -> None:
    command = readme_test_command()
    assert command.startswith('pip install -c constraints.txt -e ".[dev]" && ')
    assert "python -m pytest" in command


def test_constraints_pin_every_dependency_the_project_declares() -> None:
    pinned = {
        re.split(r"==", line)[0].lower().replace("_", "-")
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    assert names <= pinned, f"not pinned in constraints.txt: {sorted(names - pinned)}"


def test_ci_run_executes_the_readme_test_command() -> None:
    assert os.access(CI_RUN, os.X_OK)
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True)
    awk = re.search(r"test_command=\$\(awk '([^']+)' README.md\)", CI_RUN.read_text())
    assert awk is not None, ".ci/run reads its test command from README.md"
    extracted = subprocess.run(
        ["awk", awk.group(1), "README.md"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == readme_test_command()


def test_ci_run_treats_no_collected_tests_as_failure() -> None:
    text = CI_RUN.read_text()
    assert re.search(r'if \[ "\$status" -eq 5 \]; then\s+die ', text)


def documented_settings() -> dict[str, str]:
    rows = re.findall(r"^\| `(SWAPFLEET_[A-Z0-9_]+)` \| `?([^|`]*?)`? \|", README, re.MULTILINE)
    return dict(rows)


def test_readme_configuration_table_lists_every_setting_with_its_default() -> None:
    expected = {
        f"SWAPFLEET_{name.upper()}": "unset" if field.default is None else str(field.default)
        for name, field in Settings.model_fields.items()
    }
    assert documented_settings() == expected


def test_readme_states_the_allocation_rule() -> None:
    text = " ".join(README.split())
    assert (
        "the one with the **highest SoC**, ties broken toward the **fewest full-equivalent cycles**"
        in text
    )
    assert "at or above the station's target SoC" in text


def test_readme_walkthrough_matches_the_demo_network() -> None:
    daxing = next(s for s in demo.STATIONS if s.code == "UPW-BJ-DAXING")
    truck = next(v for v in demo.VEHICLES if v.vin == "LVBV6PEC0R0000101")
    assert truck.battery.serial == "BB-HT141-0101"
    assert f'"removed_battery_serial": "{truck.battery.serial}"' in README
    # The README promises the 100 % battery in slot 1: the highest SoC at the station.
    best = max(daxing.charged, key=lambda b: (b.soc_pct, -b.cycles))
    assert (best.serial, daxing.charged.index(best) + 1) == ("BB-HT141-0001", 1)
    assert "BB-HT141-0001, the 100 % battery in\n#    slot 1" in README

    in_slots = sum(len(s.charged) for s in demo.STATIONS)
    assert f"{in_slots} charged in station slots" in README
    assert f"{len(demo.VEHICLES)} in vehicles" in README
