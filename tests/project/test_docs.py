"""README.md and .ci/run are checked against the code, so that they cannot drift from it."""

import os
import re
import subprocess
import tomllib

from app.cli.demo import demo_network
from app.core.config import Settings
from tests.fixtures.paths import REPO_ROOT

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
    network = demo_network()
    station = next(s for s in network.stations if s.code == "UPW-TS-CFD-01")
    truck = next(v for v in network.vehicles if v.vin == "SFV00000000000001")
    assert truck.battery.serial == "BB-HT141-0001"
    assert f"{truck.battery.serial} on a network just seeded" in README
    # The README promises the 100 % battery with the fewest cycles, in slot 5: the highest SoC
    # at the station, ties broken toward the fewest cycles.
    model = next(m for m in network.models if m.code == truck.model)
    fits = {n: b for n, b in station.stocked.items() if b.pack in model.packs}
    slot = max(fits, key=lambda n: (fits[n].soc_pct, -fits[n].cycles))
    assert (fits[slot].serial, slot) == ("BB-HT282-0035", 5)
    promise = (
        "BB-HT282-0035, of\n#    the 100 % batteries the one with the fewest cycles, in slot 5"
    )
    assert promise in README
    in_slots = sum(len(s.stocked) for s in network.stations)
    assert f"{in_slots} in station slots" in README
    assert f"{len(network.vehicles)} in vehicles" in README
