"""Credentials that confine each device to its own topics.

A station publishes only under `{prefix}/stations/{code}/#` and a vehicle only under
`{prefix}/vehicles/{vin}/#`; the ingest reads everything under the prefix. Provisioning the
same identity again replaces its password (rotation) and its ACL block.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from app.provisioning import mosquitto_files
from devices.contract import IDENTIFIER_PATTERN

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class CredentialKind(StrEnum):
    station = "station"
    vehicle = "vehicle"
    ingest = "ingest"


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    identity: str
    username: str
    password: str = field(repr=False)
    acl_rules: tuple[str, ...]


def username_for(kind: CredentialKind, identity: str) -> str:
    # The kind is part of the name so that a station code can never pose as a VIN.
    return identity if kind is CredentialKind.ingest else f"{kind.value}-{identity}"


def acl_rules_for(kind: CredentialKind, identity: str, prefix: str) -> tuple[str, ...]:
    if kind is CredentialKind.station:
        return (f"topic write {prefix}/stations/{identity}/#",)
    if kind is CredentialKind.vehicle:
        return (f"topic write {prefix}/vehicles/{identity}/#",)
    # Mosquitto checks a `$share/<group>/<filter>` subscription against <filter>, so this
    # one rule also admits the ingest's shared subscriptions.
    return (f"topic read {prefix}/#",)


def provision(
    kind: CredentialKind,
    identity: str,
    *,
    prefix: str,
    passwd_file: Path,
    acl_file: Path,
) -> Credential:
    if not _IDENTIFIER.match(identity) or len(identity) > 64:
        # The identity ends up in a topic and in an ACL line: no wildcards, slashes, spaces.
        raise ValueError(f"{identity!r} is not a valid {kind.value} identity")
    if not prefix or any(c in prefix for c in "#+\n ") or prefix.endswith("/"):
        raise ValueError(f"{prefix!r} is not a valid topic prefix")
    username = username_for(kind, identity)
    password = secrets.token_urlsafe(24)
    rules = acl_rules_for(kind, identity, prefix)
    with mosquitto_files.locked(acl_file):
        mosquitto_files.set_password_entry(
            passwd_file, username, mosquitto_files.hash_password(password)
        )
        mosquitto_files.set_acl_block(acl_file, username, rules)
    return Credential(kind, identity, username, password, rules)
