"""Turn database constraint violations on flush into problem responses instead of 500s.

Services check uniqueness first to give a clear message; this covers the race in which a
concurrent request inserts the same key between that check and our insert.
"""

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import AppError, Conflict, Unprocessable

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"


def flush_or_raise(session: Session, on_unique: AppError) -> None:
    """Flush; a unique violation raises `on_unique`, any other integrity error a 4xx.

    The session is unusable afterwards, which is fine: the raised AppError makes the unit
    of work roll back.
    """
    try:
        session.flush()
    except IntegrityError as exc:
        sqlstate = getattr(exc.orig, "sqlstate", None)
        diag = getattr(exc.orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None) or "unknown"
        if sqlstate == UNIQUE_VIOLATION:
            raise on_unique from exc
        if sqlstate == FOREIGN_KEY_VIOLATION:
            raise Conflict(
                f"a referenced record was changed concurrently ({constraint}); retry"
            ) from exc
        raise Unprocessable(f"the database rejected the change ({constraint})") from exc
