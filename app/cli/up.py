"""`swapfleet up`: the whole backend on one machine, under one supervisor (app/local/)."""

import os
from typing import Annotated

import typer
from sqlalchemy import func, select

from app.auth.service import create_key
from app.cli.api import api_workers
from app.cli.common import PortTaken, display_url, require_database, require_free_port
from app.cli.demo import demo_network, echo_seed_summary
from app.core import clock
from app.core.config import Settings, get_settings
from app.core.db import get_engine, get_session_factory
from app.local.demo import seed_demo
from app.local.local_broker import BrokerUnavailable, prepare_local_broker
from app.local.supervisor import ChildSpec, Supervisor, interrupt_on_sigterm, swapfleet_command
from app.models import ApiKey, KeyRole, Organization
from app.models.base import utcnow
from simulators.cli import UP_BACKFILL_DAYS, UP_SPEED, up_simulator_command


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
    from app.core.migrate import upgrade

    database_url = require_database(settings)
    upgrade(database_url)
    with get_session_factory().begin() as session:
        has_orgs = session.scalar(select(func.count(Organization.id))) or 0
        summary = None if has_orgs else seed_demo(session, demo_network())
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
        now=clock.now(),
    )
    return ChildSpec(name="simulator", argv=argv, env=env)


def up(
    host: Annotated[str | None, typer.Option(help="Default: SWAPFLEET_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SWAPFLEET_API_PORT")] = None,
    simulate: Annotated[
        bool,
        typer.Option(help="Simulate the demo network (trucks, vans and cars; docs/scenarios.md)"),
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
    from app.local.embedded_db import EmbeddedDatabase, start_embedded_database

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
