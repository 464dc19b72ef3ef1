"""Idempotency-Key support: a retried request returns the first response, doing nothing twice.

A transaction-scoped advisory lock on (api key, idempotency key) serialises concurrent
retries: the second waits for the first to commit, then finds its stored response. Lock and
look-up are one call of swapfleet_claim_idempotency (migration a6d2f8c4e1b9), one round trip.
Both statements are built apart from their execution, so a sync Session or an async
connection can run them.
"""

import hashlib
from dataclasses import dataclass

import orjson
from sqlalchemy import (
    BigInteger,
    Insert,
    Integer,
    Row,
    Select,
    Text,
    column,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session

from app.errors import AppError
from app.models import IdempotencyRecord


class IdempotencyKeyReused(AppError):
    status = 422
    code = "IdempotencyKeyReused"
    title = "Idempotency-Key already used for a different request"


ClaimRow = Row[str, int, str]
ClaimStatement = Select[str, int, str]


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
    row = session.execute(claim_statement(api_key_id=api_key_id, key=key)).one_or_none()
    return claimed(row, key=key, fingerprint=fingerprint)


def claim_statement(*, api_key_id: int, key: str) -> ClaimStatement:
    """Takes the key's lock and looks its record up in one round trip (the function of
    migration a6d2f8c4e1b9); no row: the key is new. Executes on a sync Session or an async
    connection alike."""
    call = func.swapfleet_claim_idempotency(
        literal(api_key_id, BigInteger()), literal(key, Text())
    ).table_valued(
        column("request_hash", Text), column("status_code", Integer), column("response_body", Text)
    )
    return select(call)


def claimed(row: ClaimRow | None, *, key: str, fingerprint: str) -> StoredResponse | None:
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was first used with a different request; "
            "use a new key for a new request"
        )
    return StoredResponse(row.status_code, row.response_body.encode())


def store(
    session: Session, *, api_key_id: int, key: str, fingerprint: str, response: StoredResponse
) -> None:
    session.execute(
        store_statement(api_key_id=api_key_id, key=key, fingerprint=fingerprint, response=response)
    )


def store_statement(
    *, api_key_id: int, key: str, fingerprint: str, response: StoredResponse
) -> Insert:
    """A plain INSERT rather than an ORM flush: nothing reads the record in this request."""
    return insert(IdempotencyRecord).values(
        api_key_id=api_key_id,
        key=key,
        request_hash=fingerprint,
        status_code=response.status_code,
        response_body=response.body.decode(),
    )
