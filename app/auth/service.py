import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Select, String, bindparam, select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import NamedRow, Prepared, Statements, prepare
from app.core.errors import AppError, Forbidden, NotFound, Unauthorized
from app.models import ApiKey, KeyRole, Organization, OrgRole

KEY_PREFIX = "sfk_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's role and, for scoped roles, its organization."""

    api_key_id: int
    role: KeyRole
    organization_id: int | None
    organization_code: str | None

    @property
    def is_admin(self) -> bool:
        return self.role is KeyRole.admin

    # The one rule of whose rows a scoped key reads; each domain's repository applies it in
    # its readable_statement.
    @property
    def oem_scope(self) -> int | None:
        """An OEM key's organization: it reads its own program's records only. None for admin
        and operator keys (operators serve every OEM)."""
        return self.organization_id if self.role is KeyRole.oem else None

    @property
    def operator_scope(self) -> int | None:
        """An operator key's organization: it reads its own stations only. None for admin and
        OEM keys."""
        return self.organization_id if self.role is KeyRole.operator else None

    def require_role(self, *roles: KeyRole) -> None:
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"this action needs a key with role {allowed}; this key is {self.role}")

    def require_admin_or_org(self, organization_id: int, what: str) -> None:
        if not self.is_admin and self.organization_id != organization_id:
            raise Forbidden(f"{what} belongs to another organization")


class RoleOrganizationMismatch(AppError):
    status = 422
    code = "RoleOrganizationMismatch"
    title = "Key role does not fit the organization"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_key(
    session: Session, *, role: KeyRole, organization_code: str | None, name: str = ""
) -> tuple[ApiKey, str]:
    """Returns the stored key and the raw secret, which is never stored and shown only once."""
    organization_id = None
    if role is not KeyRole.admin:
        if not organization_code:
            raise RoleOrganizationMismatch(f"a {role} key needs an organization")
        org = session.scalar(select(Organization).where(Organization.code == organization_code))
        if org is None:
            raise NotFound(f"organization {organization_code!r} not found")
        expected = OrgRole.operator if role is KeyRole.operator else OrgRole.oem
        if org.role is not expected:
            raise RoleOrganizationMismatch(
                f"a {role} key needs an organization with role {expected}; {org.code} is {org.role}"
            )
        organization_id = org.id
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(
        key_hash=hash_key(raw_key),
        prefix=raw_key[: len(KEY_PREFIX) + 6],
        name=name,
        role=role,
        organization_id=organization_id,
    )
    session.add(api_key)
    session.flush()
    return api_key, raw_key


class PrincipalCache:
    """The principals of keys this process checked recently, each trusted for `ttl_s` from
    its check: a key revoked in the database stops working in every process within ttl_s.
    Only valid keys are kept, so a key works as soon as it is created."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str, ttl_s: float) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None or time.monotonic() - entry[0] >= ttl_s:
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                # Callers with thousands of live keys: start over rather than track ages.
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic(), principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


principal_cache = PrincipalCache()


def authenticate(session: Session, raw_key: str) -> Principal:
    key_hash = hash_key(raw_key)
    principal = principal_cache.get(key_hash, get_settings().api_key_cache_ttl_s)
    if principal is not None:
        return principal
    row = session.execute(_key_statement(), {"key_hash": key_hash}).mappings().one_or_none()
    return _remember(key_hash, row)


async def authenticate_async(statements: Statements, raw_key: str) -> Principal:
    """authenticate for the async routes: the same cache, the same look-up."""
    key_hash = hash_key(raw_key)
    principal = principal_cache.get(key_hash, get_settings().api_key_cache_ttl_s)
    if principal is not None:
        return principal
    rows = await statements.rows(_prepared_key_statement(), {"key_hash": key_hash})
    return _remember(key_hash, rows[0] if rows else None)


@cache
def _key_statement() -> Select[int, KeyRole, int | None, str | None]:
    return (
        select(
            ApiKey.id.label("api_key_id"),
            ApiKey.role,
            ApiKey.organization_id,
            Organization.code.label("organization_code"),
        )
        .outerjoin(Organization, Organization.id == ApiKey.organization_id)
        .where(ApiKey.key_hash == bindparam("key_hash", type_=String), ApiKey.revoked_at.is_(None))
    )


@cache
def _prepared_key_statement() -> Prepared:
    return prepare(_key_statement())


def _remember(key_hash: str, row: NamedRow | None) -> Principal:
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    principal = Principal(
        api_key_id=row["api_key_id"],
        role=KeyRole(row["role"]),  # the async read gives the enum's text
        organization_id=row["organization_id"],
        organization_code=row["organization_code"],
    )
    if get_settings().api_key_cache_ttl_s > 0:
        principal_cache.put(key_hash, principal)
    return principal
