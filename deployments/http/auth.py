"""Bearer tokens: every route but /health needs `Authorization: Bearer <token>` of an active token."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from spotshift.stores.tokens import ApiToken

_bearer = HTTPBearer(auto_error=False, description="a token from `spotshift api token create --name NAME`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> ApiToken:
    """The caller's active token; 401 when it is missing, unknown or revoked (the same answer for
    all three: a caller learns nothing about which tokens exist)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required", headers=_CHALLENGE)
    token = await request.app.state.api.read(request.app.state.api.tokens.verify, credentials.credentials)
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers=_CHALLENGE)
    return token
