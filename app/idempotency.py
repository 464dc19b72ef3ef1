"""Idempotency-Key support: a retried request returns the first response, doing nothing twice.

A transaction-scoped advisory lock on (api key, idempotency key) serialises concurrent
retries: the second waits for the first to commit, then finds its stored response.
"""

import hashlib
from dataclasses import dataclass

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import AppError
from app.models import IdempotencyRecord


class IdempotencyKeyReused(AppError):
    status = 422
    code = "IdempotencyKeyReused"
    title = "Idempotency-Key already used for a different request"


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: bytes


def request_fingerprint(method: str, path: str, body: object) -> str:
    canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def claim(
    session: Session, *, api_key_id: int, key: str, fingerprint: str
) -> StoredResponse | None:
    """Returns the stored response of an earlier identical request, or None to proceed."""
    session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"{api_key_id}:{key}", 0)))
    )
    record = session.get(IdempotencyRecord, (api_key_id, key), populate_existing=True)
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was first used with a different request; "
            "use a new key for a new request"
        )
    return StoredResponse(record.status_code, record.response_body.encode())


def store(
    session: Session, *, api_key_id: int, key: str, fingerprint: str, response: StoredResponse
) -> None:
    session.add(
        IdempotencyRecord(
            api_key_id=api_key_id,
            key=key,
            request_hash=fingerprint,
            status_code=response.status_code,
            response_body=response.body.decode(),
        )
    )
    session.flush()
