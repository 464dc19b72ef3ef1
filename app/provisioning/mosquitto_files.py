"""Mosquitto's password file and ACL file, edited in place and atomically.

The password file holds `username:$7$iterations$salt$hash` lines, Mosquitto 2's PBKDF2-SHA512
format (what `mosquitto_passwd` writes), so provisioning needs no Mosquitto binaries. The ACL
file is a header followed by one `user` block per credential; a block is replaced whole when
its user is provisioned again.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# Mosquitto's own default. Device passwords are 192-bit random tokens, so key stretching
# adds nothing against guessing, while every connect of every device pays for it.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12

ACL_HEADER = """\
# Mosquitto ACL for swapfleet, maintained by `swapfleet devices provision`.
# Each device may publish only under its own topics; the ingest reads everything under the
# prefix (shared subscriptions included). A user with no block here is allowed nothing.
"""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return (
        f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


def verify_password(password: str, encoded: str) -> bool:
    _, scheme, iterations, salt, digest = encoded.split("$")
    if scheme != "7":
        raise ValueError(f"unsupported Mosquitto password scheme ${scheme}$")
    computed = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return secrets.compare_digest(computed, base64.b64decode(digest))


def set_password_entry(path: Path, username: str, encoded_hash: str) -> None:
    lines = _read_lines(path)
    kept = [line for line in lines if line.split(":", 1)[0] != username]
    _write_atomically(path, "".join(f"{line}\n" for line in [*kept, f"{username}:{encoded_hash}"]))


def set_acl_block(path: Path, username: str, rules: Sequence[str]) -> None:
    header, blocks = parse_acl(path)
    blocks[username] = list(rules)
    _write_atomically(path, render_acl(header, blocks))


def parse_acl(path: Path) -> tuple[str, dict[str, list[str]]]:
    header: list[str] = []
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in _read_lines(path):
        stripped = line.strip()
        if stripped.startswith("user "):
            current = blocks.setdefault(stripped.removeprefix("user ").strip(), [])
        elif current is None:
            header.append(line)
        elif stripped and not stripped.startswith("#"):
            current.append(stripped)
    text = "\n".join(header).strip()
    return (text + "\n" if text else ACL_HEADER), blocks


def render_acl(header: str, blocks: dict[str, list[str]]) -> str:
    parts = [header.rstrip("\n") + "\n"]
    for username, rules in blocks.items():
        parts.append("\n" + "\n".join([f"user {username}", *rules]) + "\n")
    return "".join(parts)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise concurrent provisioning runs on the same files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _write_atomically(path: Path, text: str) -> None:
    # Mosquitto rereads these files on SIGHUP: it must never see a half-written one.
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
