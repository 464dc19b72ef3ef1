"""The `swapfleet` command.

What a person reads (keys, summaries, where the database is) goes to stdout with typer.echo;
diagnostics go to the log on stderr.
"""

import logging
import os
import socket
from typing import Annotated

import typer
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.auth.service import create_key
from app.config import Settings, get_settings
from app.db import get_engine, get_session_factory
from app.demo import SeedSummary, seed_demo
from app.errors import AppError
from app.ingest import cli as ingest_cli
from app.local_broker import BrokerUnavailable, prepare_local_broker
from app.models import ApiKey, KeyRole, Organization
from app.models.base import utcnow
from app.provisioning.cli import devices_cli
from app.reports import cli as reports_cli
from app.supervisor import ChildSpec, Supervisor, interrupt_on_sigterm, swapfleet_command
from simulators.cli import UP_BACKFILL_DAYS, UP_SPEED, simulate_cli, up_simulator_command

logger = logging.getLogger("app.cli")

cli = typer.Typer(
    help="swapfleet: battery custody, swaps and telemetry for battery-swap station fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(devices_cli, name="devices")
cli.add_typer(simulate_cli, name="simulate")
cli.command("report")(reports_cli.report)
db_cli.command("rebuild-aggregates")(reports_cli.rebuild_aggregates)
cli.command("detect-anomalies")(reports_cli.detect_anomalies)
cli.command("ingest", help="Subscribe to device telemetry over MQTT and store every record.")(
    ingest_cli.run
)
db_cli.command("prune")(ingest_cli.prune)


@cli.callback()
def _configure_logging() -> None:
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def require_database(settings: Settings) -> str:
    if not settings.database_url:
        raise fail(
            "SWAPFLEET_DATABASE_URL is not set; `swapfleet up` starts an embedded database,"
            " every other command needs the URL"
        )
    return settings.database_url


def display_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# --- db -----------------------------------------------------------------------------------


@db_cli.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Alembic revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from app.migrate import upgrade

    upgrade(require_database(get_settings()), revision)
    typer.echo(f"database schema at {revision}")


@db_cli.command("current")
def db_current() -> None:
    """Show the revision the database is at."""
    from alembic import command

    from app.migrate import alembic_config

    command.current(alembic_config(require_database(get_settings())))


# --- api ----------------------------------------------------------------------------------


@cli.command("api")
def api(
    host: Annotated[str | None, typer.Option(help="Default: SWAPFLEET_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SWAPFLEET_API_PORT")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes serving requests. Default: SWAPFLEET_API_WORKERS, else one per CPU",
        ),
    ] = None,
) -> None:
    """Serve the REST API."""
    settings = get_settings()
    require_database(settings)
    host, port = host or settings.api_host, port or settings.api_port
    try:
        require_free_port(host, port, "the API", "--port or SWAPFLEET_API_PORT")
    except PortTaken as exc:
        raise fail(str(exc)) from None
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        # One Python process runs one request's Python at a time: a process per core.
        workers=workers or api_workers(settings),
        # The supervisor of several workers replaces one that has not answered its ping
        # within this; uvicorn's 5 s killed workers still importing on a busy machine.
        timeout_worker_healthcheck=30,
        log_level=settings.log_level.lower(),
        # The Prometheus middleware already counts requests; uvicorn's access log would double
        # the log volume for nothing.
        access_log=False,
        # The OCPP gateway answers a message above SWAPFLEET_OCPP_MAX_MESSAGE_BYTES with a
        # CALLERROR; a frame above this closes the connection (1009) before it is buffered.
        ws_max_size=16 * settings.ocpp_max_message_bytes,
    )


def api_workers(settings: Settings) -> int:
    # The CPUs this process may run on (a container's cpuset), not the host's count.
    return settings.api_workers or len(os.sched_getaffinity(0)) or 1


# --- keys ---------------------------------------------------------------------------------


@keys_cli.command("create")
def keys_create(
    role: Annotated[KeyRole, typer.Option(help="admin, operator or oem")],
    org: Annotated[
        str | None, typer.Option(help="Organization code; required for operator and oem keys")
    ] = None,
    name: Annotated[str, typer.Option(help="A label to recognize the key by")] = "",
) -> None:
    """Create an API key. The key is printed once, as the last line, and never stored."""
    require_database(get_settings())
    if role is KeyRole.admin and org:
        raise fail("admin keys are not bound to an organization; leave out --org")
    try:
        with get_session_factory().begin() as session:
            api_key, raw_key = create_key(session, role=role, organization_code=org, name=name)
            prefix = api_key.prefix
    except AppError as exc:
        raise fail(exc.detail) from exc
    # Printed only after the commit, so a printed key always exists.
    scope = f" for {org}" if role is not KeyRole.admin else ""
    typer.echo(f"created {role.value} key {prefix}{scope}; store it now, it is not shown again:")
    typer.echo(raw_key)


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (prefix, role, organization, dates); secrets are never stored."""
    require_database(get_settings())
    with get_session_factory().begin() as session:
        rows = session.execute(
            select(
                ApiKey.prefix,
                ApiKey.role,
                Organization.code,
                ApiKey.name,
                ApiKey.created_at,
                ApiKey.revoked_at,
            )
            .outerjoin(Organization, Organization.id == ApiKey.organization_id)
            .order_by(ApiKey.created_at, ApiKey.id)
        ).all()
    typer.echo(f"{'PREFIX':<12} {'ROLE':<9} {'ORG':<16} {'CREATED':<20} {'REVOKED':<20} NAME")
    for prefix, role, org_code, name, created_at, revoked_at in rows:
        revoked = f"{revoked_at:%Y-%m-%d %H:%M:%S}" if revoked_at else "-"
        typer.echo(
            f"{prefix:<12} {role.value:<9} {org_code or '-':<16} "
            f"{created_at:%Y-%m-%d %H:%M:%S}  {revoked:<20} {name}"
        )


@keys_cli.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, e.g. sfk_AbCdEf")],
) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    require_database(get_settings())
    with get_session_factory().begin() as session:
        keys = session.scalars(
            select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        ).all()
        if not keys:
            raise fail(f"no active key with prefix {prefix!r}")
        if len(keys) > 1:
            # Prefixes are short and not unique; revoking several keys at once is never intended.
            raise fail(f"{len(keys)} active keys share prefix {prefix!r}; nothing revoked")
        keys[0].revoked_at = utcnow()
    typer.echo(f"revoked key {prefix}")


# --- demo ---------------------------------------------------------------------------------


def echo_seed_summary(summary: SeedSummary) -> None:
    t = summary.totals
    typer.echo(
        f"demo network: {t['organizations']} organizations, {t['stations']} stations"
        f" ({t['slots']} slots), {t['pack_types']} pack types, {t['vehicle_models']} vehicle"
        f" models, {t['vehicles']} vehicles, {t['batteries']} batteries"
        f" ({t['batteries_in_slots']} in slots, {t['batteries_in_vehicles']} in vehicles)"
    )
    created = ", ".join(f"{n} {what}" for what, n in sorted(summary.created.items()))
    typer.echo(f"created: {created}" if created else "already present: nothing created")


@cli.command("seed-demo")
def seed_demo_command() -> None:
    """Create the demo network (operators, stations, OEMs, vehicles, batteries); idempotent."""
    require_database(get_settings())
    with get_session_factory().begin() as session:
        summary = seed_demo(session)
    echo_seed_summary(summary)


# --- up -----------------------------------------------------------------------------------


def api_process(settings: Settings, host: str, port: int) -> ChildSpec:
    return ChildSpec(
        name="api",
        argv=swapfleet_command(
            "api", "--host", host, "--port", str(port), "--workers", str(api_workers(settings))
        ),
        env=child_environment(settings),
    )


def ingest_process(settings: Settings) -> ChildSpec:
    return ChildSpec(
        name="ingest", argv=swapfleet_command("ingest"), env=child_environment(settings)
    )


def child_environment(settings: Settings) -> dict[str, str]:
    # Children are configured the way an operator would configure them: SWAPFLEET_* variables.
    # The database URL is the one setting `up` may have resolved itself (embedded PostgreSQL).
    env = dict(os.environ)
    if settings.database_url:
        env["SWAPFLEET_DATABASE_URL"] = settings.database_url
    if settings.mqtt_url:
        env["SWAPFLEET_MQTT_URL"] = settings.mqtt_url
    # `up` may have chosen it too: MQTT 3.1.1 for its embedded broker.
    env["SWAPFLEET_MQTT_PROTOCOL"] = settings.mqtt_protocol
    return env


def prepare_database(settings: Settings) -> bool:
    """Migrate; on a new database seed the demo and print a first admin key. True when the
    database was new."""
    from app.migrate import upgrade

    database_url = require_database(settings)
    upgrade(database_url)
    with get_session_factory().begin() as session:
        has_orgs = session.scalar(select(func.count(Organization.id))) or 0
        summary = None if has_orgs else seed_demo(session)
        has_keys = session.scalar(select(func.count(ApiKey.id))) or 0
        raw_key = None
        if not has_keys:
            _, raw_key = create_key(
                session, role=KeyRole.admin, organization_code=None, name="first admin (up)"
            )
    if summary is not None:
        echo_seed_summary(summary)
    if raw_key is None:
        typer.echo(
            "API keys exist already; to make another admin key run:\n"
            f"  SWAPFLEET_DATABASE_URL='{database_url}' swapfleet keys create --role admin"
        )
    else:
        typer.echo("first start: admin API key (store it now, it is not shown again):")
        typer.echo(raw_key)
    return summary is not None


SIMULATOR_KEY_NAME = "simulated fleet (up)"


def simulator_key() -> str:
    """A fresh admin key for the simulated fleet child; the previous run's is revoked, so
    restarts do not pile up live keys."""
    with get_session_factory().begin() as session:
        for old in session.scalars(
            select(ApiKey).where(ApiKey.name == SIMULATOR_KEY_NAME, ApiKey.revoked_at.is_(None))
        ):
            old.revoked_at = utcnow()
        _, raw_key = create_key(
            session, role=KeyRole.admin, organization_code=None, name=SIMULATOR_KEY_NAME
        )
    return raw_key


def simulator_process(
    settings: Settings, host: str, port: int, *, backfill: bool, speed: float
) -> ChildSpec:
    api_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    assert settings.mqtt_url is not None
    argv, env = up_simulator_command(
        f"http://{api_host}:{port}",
        simulator_key(),
        settings.mqtt_url,
        topic_prefix=settings.mqtt_topic_prefix,
        base_env=child_environment(settings),
        backfill=backfill,
        speed=speed,
    )
    return ChildSpec(name="simulator", argv=argv, env=env)


@cli.command("up")
def up(
    host: Annotated[str | None, typer.Option(help="Default: SWAPFLEET_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SWAPFLEET_API_PORT")] = None,
    simulate: Annotated[
        bool, typer.Option(help="Run a small simulated fleet (3 stations, 24 vehicles)")
    ] = True,
    real_time: Annotated[
        bool,
        typer.Option(
            help=f"Simulate in real time (default: {UP_SPEED:g}x, after a backfill of "
            f"{UP_BACKFILL_DAYS} days on a new database)"
        ),
    ] = False,
) -> None:
    """Run the whole backend on this machine: API, MQTT ingest and, unless configured
    otherwise, an embedded PostgreSQL and a private Mosquitto (or, without Mosquitto, an
    embedded MQTT 3.1.1 broker) under SWAPFLEET_DATA_DIR."""
    from app.embedded_db import EmbeddedDatabase, start_embedded_database

    interrupt_on_sigterm()
    settings = get_settings()
    host = host or settings.api_host
    port = port or settings.api_port
    embedded: EmbeddedDatabase | None = None
    code = 0
    try:
        require_free_port(host, port, "the API", "--port or SWAPFLEET_API_PORT")
        if settings.ingest_metrics_port is not None:
            require_free_port(
                "0.0.0.0",
                settings.ingest_metrics_port,
                "the ingest's metrics",
                "SWAPFLEET_INGEST_METRICS_PORT",
            )
        if settings.database_url:
            typer.echo(f"database: {display_url(settings.database_url)} (SWAPFLEET_DATABASE_URL)")
        else:
            embedded = start_embedded_database(settings.data_dir)
            # The resolved URL goes on the one settings object, before anything has built an
            # engine from it; children receive it as SWAPFLEET_DATABASE_URL (child_environment).
            settings.database_url = embedded.url
            typer.echo(f"database: embedded PostgreSQL, data in {embedded.pgdata}")
            typer.echo(f"          {embedded.url}")
        new_database = prepare_database(settings)
        children = [api_process(settings, host, port)]
        if settings.mqtt_url:
            typer.echo(f"MQTT broker: {settings.mqtt_url} (SWAPFLEET_MQTT_URL)")
        else:
            broker = prepare_local_broker(settings.data_dir, child_environment(settings))
            settings.mqtt_url = broker.url
            settings.mqtt_protocol = broker.protocol
            children.insert(0, broker.spec)
            typer.echo(f"MQTT broker: {broker.description}")
        children.append(ingest_process(settings))
        if simulate:
            speed = 1.0 if real_time else UP_SPEED
            backfill = new_database and not real_time
            children.append(simulator_process(settings, host, port, backfill=backfill, speed=speed))
            pace = "in real time" if real_time else f"at {speed:g}x, never ahead of the clock"
            history = f", after {UP_BACKFILL_DAYS} days of history" if backfill else ""
            typer.echo(
                f"simulated fleet: 3 stations, 24 vehicles {pace}{history} (--no-simulate: off)"
            )
        typer.echo(f"API: http://{host}:{port} (OpenAPI docs at /docs); Ctrl-C stops everything")
        code = Supervisor(children).run()
    except (BrokerUnavailable, PortTaken) as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        code = 0
    finally:
        if embedded is not None:
            # Close pooled connections first so the server stops without killing sessions.
            if get_engine.cache_info().currsize:
                get_engine().dispose()
            embedded.stop()
    raise typer.Exit(code)


class PortTaken(RuntimeError):
    pass


def require_free_port(host: str, port: int, what: str, setting: str) -> None:
    """Fail in one line, naming the port and how to change it, rather than letting a child die
    with a traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like uvicorn and prometheus_client: a port in TIME_WAIT is not taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortTaken(
                f"port {port} for {what} is taken ({exc.strerror}); choose another with {setting}"
            ) from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
