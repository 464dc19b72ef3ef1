"""`swapfleet devices ...`: MQTT credentials for stations, vehicles and the ingest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from app.core.config import get_settings
from app.provisioning.service import CredentialKind, provision

logger = logging.getLogger(__name__)

devices_cli = typer.Typer(help="Device credentials for the MQTT broker.", no_args_is_help=True)


@devices_cli.callback()
def _devices() -> None:
    # A callback keeps `provision` a subcommand: typer would fold a lone command into the group.
    pass


@devices_cli.command("provision")
def provision_command(
    station: Annotated[
        str | None, typer.Option(help="Station code: may publish under stations/CODE/#")
    ] = None,
    vehicle: Annotated[
        str | None, typer.Option(help="Vehicle VIN: may publish under vehicles/VIN/#")
    ] = None,
    ingest: Annotated[
        str | None,
        typer.Option(help="A service user (such as `ingest`) that reads everything"),
    ] = None,
    passwd_file: Annotated[
        Path | None, typer.Option(help="Mosquitto password file [SWAPFLEET_MQTT_PASSWD_FILE]")
    ] = None,
    acl_file: Annotated[
        Path | None, typer.Option(help="Mosquitto ACL file [SWAPFLEET_MQTT_ACL_FILE]")
    ] = None,
    ocpp: Annotated[
        bool,
        typer.Option(
            "--ocpp",
            help="With --station: the station's OCPP 2.1 password (HTTP Basic), kept hashed in "
            "the database, instead of an MQTT credential",
        ),
    ] = False,
) -> None:
    """Create (or rotate) a credential and print its password once; only its hash is kept."""
    if ocpp:
        if station is None or vehicle is not None or ingest is not None:
            typer.echo("error: --ocpp goes with --station only", err=True)
            raise typer.Exit(2)
        provision_ocpp(station)
        return
    chosen = [
        (kind, value)
        for kind, value in (
            (CredentialKind.station, station),
            (CredentialKind.vehicle, vehicle),
            (CredentialKind.ingest, ingest),
        )
        if value is not None
    ]
    if len(chosen) != 1:
        typer.echo("error: give exactly one of --station, --vehicle or --ingest", err=True)
        raise typer.Exit(2)
    kind, identity = chosen[0]
    settings = get_settings()
    passwd = passwd_file or settings.mqtt_passwd_file
    acl = acl_file or settings.mqtt_acl_file
    try:
        credential = provision(
            kind,
            identity,
            prefix=settings.mqtt_topic_prefix,
            passwd_file=passwd,
            acl_file=acl,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    logger.info(
        "event=credential_provisioned kind=%s username=%s passwd_file=%s acl_file=%s",
        kind.value,
        credential.username,
        passwd,
        acl,
    )
    typer.echo(f"username: {credential.username}")
    typer.echo(f"password: {credential.password}")
    for rule in credential.acl_rules:
        typer.echo(f"acl:      {rule}")
    typer.echo("The password is shown only now. Reload Mosquitto (SIGHUP) to apply it.", err=True)


def provision_ocpp(station: str) -> None:
    # Imported here: the MQTT provisioning above needs no database driver or models.
    from app.core.db import get_session_factory
    from app.ocpp import service as ocpp_service

    try:
        with get_session_factory().begin() as session:
            password = ocpp_service.set_password(session, station)
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    logger.info("event=ocpp_credential_provisioned station=%s", station)
    typer.echo(f"url:      /ocpp/{station}  (subprotocol ocpp2.1)")
    typer.echo(f"username: {station}")
    typer.echo(f"password: {password}")
    typer.echo(
        "The password is shown only now; provisioning again replaces it (the station's "
        "BasicAuthPassword).",
        err=True,
    )
