import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    """A domain error that knows its HTTP status and a stable machine-readable code."""

    status: int = 400
    code: str = "BadRequest"
    title: str = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(AppError):
    status = 404
    code = "NotFound"
    title = "Not found"


class Conflict(AppError):
    status = 409
    code = "Conflict"
    title = "Conflict"


class Unprocessable(AppError):
    status = 422
    code = "Unprocessable"
    title = "Unprocessable request"


class Unauthorized(AppError):
    status = 401
    code = "Unauthorized"
    title = "Missing or invalid API key"


class Forbidden(AppError):
    status = 403
    code = "Forbidden"
    title = "Outside the key's scope"


# How long a client should wait before retrying a request the database could not complete.
RETRY_AFTER_S = 1


class ServiceUnavailable(AppError):
    status = 503
    code = "DatabaseUnavailable"
    title = "The database could not complete the request"


class CommitFailed(ServiceUnavailable):
    """Nothing of the request was stored; a retry with the same Idempotency-Key is safe, since
    the idempotency record rolled back with everything else."""


def problem_body(
    status: int, code: str, title: str, detail: str | None, **extra: Any
) -> dict[str, Any]:
    """An RFC 9457 problem detail; also what a recorded swap rejection stores for replays."""
    return {
        "type": f"urn:swapfleet:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = problem_body(status, code, title, detail, **extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors a route can return."""
    out: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = out.setdefault(error.status, {"description": "", "content": {PROBLEM_JSON: {}}})
        entry["description"] = " | ".join(filter(None, [entry["description"], error.code]))
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(422, "ValidationError", "Invalid request", detail, errors=errors)

    # Imported here: app.core.integrity builds on the errors above.
    from app.core.integrity import violation_error

    # The last line of defence: a violation no service expected, and what a refused commit
    # (a deferred constraint) of the unit of work raises: the transaction was rolled back,
    # so nothing of the request is stored.
    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        error = violation_error(exc)
        return problem(error.status, error.code, error.title, error.detail, **error.extra)

    # The database was unreachable or failed the transaction (a lost connection, a failover,
    # a commit that raised): nothing was stored and the same request may succeed later. A
    # retry with the same Idempotency-Key is safe, since the idempotency record rolled back too.
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(InternalError)
    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The SQLSTATE tells a deadlock (40P01) from a lost connection (none) in the log.
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        log.warning("event=database_unavailable error=%s sqlstate=%s", type(exc).__name__, sqlstate)
        error = ServiceUnavailable("nothing was stored; retry later")
        return problem(error.status, error.code, error.title, error.detail)

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        message = str(getattr(getattr(exc.orig, "diag", None), "message_primary", "bad value"))
        log.warning("event=data_error message=%s", message)
        return problem(422, "InvalidValue", "Value out of range for storage", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail))
