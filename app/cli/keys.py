"""`swapfleet keys`: create, list and revoke API keys."""

from typing import Annotated

import typer
from sqlalchemy import select

from app.auth.service import create_key
from app.cli.common import fail, require_database
from app.core.config import get_settings
from app.core.db import get_session_factory
from app.core.errors import AppError
from app.models import ApiKey, KeyRole, Organization
from app.models.base import utcnow

keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)


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
