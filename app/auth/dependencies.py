from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.service import Principal, authenticate
from app.db import SessionDep
from app.errors import Unauthorized
from app.models import KeyRole

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sfk_...`")


def current_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("send an API key as `Authorization: Bearer <key>`")
    return authenticate(session, credentials.credentials)


def writer_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """OEM keys are read-only everywhere."""
    principal.require_role(KeyRole.admin, KeyRole.operator)
    return principal


def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    principal.require_role(KeyRole.admin)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
WriterPrincipal = Annotated[Principal, Depends(writer_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
