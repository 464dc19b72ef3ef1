"""The one mapping from a database constraint violation to the client's error.

Services check first to give a clear message; the database decides under concurrency (a
concurrent request inserts the same key between that check and our insert) and on values that
only fail once rounded to the column's type. Whatever the path, a violation becomes an AppError
here: one a service names for a constraint it expects, else a generic one, rendered by the one
error handler.
"""

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import AppError, Conflict, Unprocessable

log = logging.getLogger(__name__)

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"


class ConstraintViolation(Conflict):
    code = "ConstraintViolation"
    title = "Conflicts with stored data"


def constraint_name(exc: IntegrityError) -> str | None:
    return getattr(getattr(exc.orig, "diag", None), "constraint_name", None)


def violation_error(
    exc: IntegrityError,
    *,
    expected: Mapping[str, AppError] | None = None,
    on_unique: AppError | None = None,
    own_write: bool = False,
) -> AppError:
    """`expected`: the errors a service gives for constraints it checks first, by constraint
    name; `on_unique`: its error for any unique violation. `own_write`: the violation was the
    service's own flush, so a foreign key that fails was changed concurrently (retry) and any
    other refusal is the request's data; otherwise (a commit, a write nobody expected) it is
    a conflict with stored data, named by its constraint."""
    constraint = constraint_name(exc)
    if expected is not None and constraint is not None and constraint in expected:
        return expected[constraint]
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if on_unique is not None and sqlstate == UNIQUE_VIOLATION:
        return on_unique
    if own_write:
        name = constraint or "unknown"
        if sqlstate == FOREIGN_KEY_VIOLATION:
            return Conflict(f"a referenced record was changed concurrently ({name}); retry")
        return Unprocessable(f"the database rejected the change ({name})")
    log.warning("event=constraint_violation constraint=%s", constraint)
    message = getattr(getattr(exc.orig, "diag", None), "message_primary", None)
    return ConstraintViolation(
        f"the database refused the change: {message or 'constraint violated'}"
        f" (constraint {constraint}); nothing was stored",
        constraint=constraint,
    )


@contextmanager
def refused_writes(
    *,
    expected: Mapping[str, AppError] | None = None,
    on_unique: AppError | None = None,
    own_write: bool = False,
) -> Iterator[None]:
    """Around a service's write: a violation raises violation_error's AppError. The session is
    unusable afterwards, which is fine: the AppError makes the unit of work roll back."""
    try:
        yield
    except IntegrityError as exc:
        raise violation_error(
            exc, expected=expected, on_unique=on_unique, own_write=own_write
        ) from exc


def flush_or_raise(session: Session, on_unique: AppError) -> None:
    """Flush; a unique violation raises `on_unique`, any other integrity error a 4xx."""
    with refused_writes(on_unique=on_unique, own_write=True):
        session.flush()
