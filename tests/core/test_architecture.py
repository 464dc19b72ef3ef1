"""The import rules of docs/architecture.md, checked on the source: every module of app/,
devices/, simulators/ and migrations/ is parsed, and every import it makes (at the top or
inside a function) must be one its package may make."""

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO_ROOT

# The domain packages: the HTTP API's, one folder each, with the same few files.
DOMAINS = frozenset(
    {
        "auth", "organizations", "catalog", "stations", "batteries", "vehicles", "swaps",
        "telemetry", "reports", "provisioning", "ocpp",
    }
)  # fmt: skip
# Which layer each of our packages may import (its own always); see docs/architecture.md.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "devices": frozenset(),
    "simulators": frozenset({"devices"}),
    "core": frozenset({"devices"}),
    "models": frozenset({"core", "devices"}),
    # The aggregate rules as data and the SQL generated from them, shared by the ingest's
    # incremental update, the rebuild, the swap roll-up and the reports.
    "rollups": frozenset({"core", "models"}),
    "domain": frozenset({"core", "models", "rollups", "domain", "devices"}),
    "ingest": frozenset({"core", "models", "rollups", "devices"}),
    "local": frozenset({"core", "models", "domain", "devices"}),
    "main": frozenset({"core", "models", "rollups", "domain", "devices"}),
    "cli": frozenset(
        {"core", "models", "rollups", "domain", "ingest", "local", "main", "devices", "simulators"}
    ),
    "migrations env": frozenset({"core", "models"}),
    # A migration is history: it keeps its own copy of what it needs, so that a later change
    # of the code cannot change what an old revision does.
    "migration": frozenset(),
}
# Libraries a layer must not use, whatever it imports from us.
NEVER: dict[str, frozenset[str]] = {
    "devices": frozenset({"fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "alembic"}),
    "simulators": frozenset(
        {"fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "alembic"}
    ),
    "ingest": frozenset({"fastapi", "starlette", "uvicorn"}),
    "models": frozenset({"fastapi", "starlette", "uvicorn"}),
    "rollups": frozenset({"fastapi", "starlette", "uvicorn"}),
}
# Known exceptions, each with its reason. An exception the code no longer needs fails the
# test too, so that this list only shrinks.
EXCEPTIONS: dict[tuple[str, str], str] = {
    # `upgrade` to head also creates this month's telemetry partitions, whose naming and
    # bounds are the ingest's (it creates the following months as it goes).
    ("app.core.migrate", "app.ingest.partitions"): "partitions at head",
    # The OCPP gateway's meter values are charging samples: it hands them to the ingest's
    # decode and writer (through this one module), so that their validation, dedupe, dead
    # letters and derived state stay the ingest's rules, in one place (issue 16).
    ("app.ocpp.gateway", "app.ingest.ocpp_meter_values"): "OCPP meter values via the ingest",
}
SOURCE_ROOTS = ("app", "devices", "simulators", "migrations")
# Nothing shipped imports the tests or the benchmarks.
NOT_SHIPPED = ("tests", "bench")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module or name, dotted
    line: int


def layer(module: str) -> str | None:
    """The layer of one of our modules, or None for a library."""
    parts = module.split(".")
    top = parts[0]
    if top in ("devices", "simulators"):
        return top
    if top == "migrations":
        return "migration" if len(parts) > 1 and parts[1] == "versions" else "migrations env"
    if top != "app" or len(parts) == 1:
        return None
    if parts[1] in DOMAINS:
        return "domain"
    return parts[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Iterator[tuple[str, Path]]:
    for root in SOURCE_ROOTS:
        for path in sorted((REPO_ROOT / root).rglob("*.py")):
            yield module_name(path), path


def imports_of(module: str, path: Path) -> Iterator[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from app.core import clock` imports app.core.clock: judge each name.
            for alias in node.names:
                yield Import(module, f"{base}.{alias.name}", node.lineno)


def all_imports() -> list[Import]:
    return [found for module, path in modules() for found in imports_of(module, path)]


def excepted(found: Import) -> tuple[str, str] | None:
    for source, target in EXCEPTIONS:
        if found.module == source and (found.target + ".").startswith(target + "."):
            return source, target
    return None


def violation(found: Import) -> str | None:
    source = layer(found.module)
    assert source is not None, found.module
    top = found.target.split(".")[0]
    if top in NOT_SHIPPED:
        return f"{source} imports {top}"
    if top in NEVER.get(source, frozenset()):
        return f"{source} must not use {top}"
    target = layer(found.target)
    if target is None or target == source or target in MAY_IMPORT[source]:
        return None  # a library, the layer itself, or a layer below
    return f"{source} may not import {target}"


def test_every_package_of_app_has_a_layer() -> None:
    unknown = (
        {
            path.name
            for path in (REPO_ROOT / "app").iterdir()
            if path.is_dir() and (path / "__init__.py").exists()
        }
        - DOMAINS
        - set(MAY_IMPORT)
    )
    assert not unknown, f"add {sorted(unknown)} to DOMAINS or MAY_IMPORT (docs/architecture.md)"


def test_every_import_follows_the_layers() -> None:
    broken = []
    for found in all_imports():
        reason = violation(found)
        if reason is not None and excepted(found) is None:
            broken.append(f"{found.module}:{found.line} imports {found.target}: {reason}")
    assert not broken, "\n".join(broken)


def test_every_exception_is_still_needed() -> None:
    used = {excepted(found) for found in all_imports() if violation(found) is not None}
    unused = set(EXCEPTIONS) - used
    assert not unused, f"remove these exceptions, the code no longer needs them: {unused}"


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("app.ingest.writer", "fastapi.HTTPException", False),
        ("app.ingest.writer", "app.reports.service", False),
        ("app.core.db", "app.batteries.service", False),
        ("devices.client", "app.core.config", False),
        ("simulators.fleet", "app.models", False),
        ("simulators.fleet", "devices.contract", True),
        ("app.swaps.service", "app.batteries.service", True),
        ("app.batteries.service", "app.cli.common", False),
        ("app.main", "app.local.demo", False),
        ("migrations.versions.x_rev", "app.models", False),
        ("migrations.env", "app.models", True),
        ("app.local.demo", "tests.fixtures.factories", False),
    ],
)
def test_the_rules_tell_allowed_from_forbidden(module: str, target: str, allowed: bool) -> None:
    assert (violation(Import(module, target, 1)) is None) is allowed
