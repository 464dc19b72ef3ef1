"""Idempotency-Key support: a retried request returns the first response, doing nothing twice.

A transaction-scoped advisory lock on (api key, idempotency key) serialises concurrent
retries: the second waits for the first to commit, then finds its stored response. Lock and
look-up are one call of swapfleet_claim_idempotency (migration a6d2f8c4e1b9), one round trip.
"""

import hashlib
from dataclasses import dataclass
from functools import cache

import orjson
from sqlalchemy import BigInteger, Integer, Text, bindparam, column, func, insert, select

from app.core.db import Prepared, Statements, prepare
from app.core.errors import AppError
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


@cache
def _claim() -> Prepared:
    """Takes the key's lock and looks its record up in one round trip (the function of
    migration a6d2f8c4e1b9); no row: the key is new."""
    call = func.swapfleet_claim_idempotency(
        bindparam("api_key_id", type_=BigInteger()), bindparam("key", type_=Text())
    ).table_valued(
        column("request_hash", Text), column("status_code", Integer), column("response_body", Text)
    )
    return prepare(select(call))


@cache
def _store() -> Prepared:
    # A plain INSERT: nothing reads the record in this request.
    return prepare(
        insert(IdempotencyRecord).values(
            api_key_id=bindparam("api_key_id"),
            key=bindparam("key"),
            request_hash=bindparam("request_hash"),
            status_code=bindparam("status_code"),
            response_body=bindparam("response_body"),
        )
    )


async def claim(
    statements: Statements, *, api_key_id: int, key: str, fingerprint: str
) -> StoredResponse | None:
    """Returns the stored response of an earlier identical request, or None to proceed."""
    rows = await statements.rows(_claim(), {"api_key_id": api_key_id, "key": key})
    if not rows:
        return None
    if rows[0]["request_hash"] != fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was first used with a different request; "
            "use a new key for a new request"
        )
    return StoredResponse(rows[0]["status_code"], rows[0]["response_body"].encode())


async def store(
    statements: Statements,
    *,
    api_key_id: int,
    key: str,
    fingerprint: str,
    response: StoredResponse,
) -> None:
    parameters = {
        "api_key_id": api_key_id,
        "key": key,
        "request_hash": fingerprint,
        "status_code": response.status_code,
        "response_body": response.body.decode(),
    }
    await statements.rows(_store(), parameters)
