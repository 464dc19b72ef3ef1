from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.service import Principal, authenticate, authenticate_async
from app.core.db import ReadDep, SessionDep
from app.core.errors import Unauthorized
from app.models import KeyRole

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sfk_...`")


def _presented_key(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("send an API key as `Authorization: Bearer <key>`")
    return credentials.credentials


def current_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    return authenticate(session, _presented_key(credentials))


async def current_principal_async(
    statements: ReadDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """current_principal for async routes; a key found in the cache costs no connection."""
    return await authenticate_async(statements, _presented_key(credentials))


def writer_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """OEM keys are read-only everywhere."""
    principal.require_role(KeyRole.admin, KeyRole.operator)
    return principal


def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    principal.require_role(KeyRole.admin)
    return principal


async def writer_principal_async(
    principal: Annotated[Principal, Depends(current_principal_async)],
) -> Principal:
    principal.require_role(KeyRole.admin, KeyRole.operator)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AsyncPrincipal = Annotated[Principal, Depends(current_principal_async)]
AsyncWriterPrincipal = Annotated[Principal, Depends(writer_principal_async)]
WriterPrincipal = Annotated[Principal, Depends(writer_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
