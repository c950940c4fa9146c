"""Bearer tokens: every route but /health and /login needs `Authorization: Bearer <token>` of an
active token. A browser signs in once at /login, which keeps the token in an HttpOnly cookie that
GET routes accept (pages and reads only: a cookie never authorises a POST, so no cross-site form
can cancel a job)."""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from spotshift.stores.tokens import ApiToken

COOKIE = "spotshift_token"
COOKIE_MAX_AGE_S = 8 * 3600
_bearer = HTTPBearer(auto_error=False, description="a token from `spotshift api token create --name NAME`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> ApiToken:
    """The caller's active token; 401 when it is missing, unknown or revoked (the same answer for
    all three: a caller learns nothing about which tokens exist)."""
    presented = credentials.credentials if credentials is not None else None
    if presented is None and request.method == "GET":
        presented = request.cookies.get(COOKIE)
    if not presented:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required (in a browser: sign in at "
                            "/login)", headers=_CHALLENGE)
    api = request.app.state.api
    token = await api.read(api.tokens.verify, presented)
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers=_CHALLENGE)
    return token


def _safe_next(target: str | None) -> str:
    """Only a path of this site: no scheme, no host, no '//' (an open redirect otherwise)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/docs"
    return target


def login_form(next: str | None = None, message: str = "") -> HTMLResponse:
    """A form asking for an API token; it posts to /login."""
    note = f'<p class="error">{escape(message)}</p>' if message else ""
    return HTMLResponse(LOGIN.format(next=escape(_safe_next(next)), note=note),
                        status_code=401 if message else 200)


async def login(request: Request) -> HTMLResponse | RedirectResponse:
    """Check the posted token; keep it in an HttpOnly, SameSite=Strict cookie and go to `next`."""
    form = parse_qs((await request.body()).decode(errors="replace"))
    presented, target = (form.get("token") or [""])[0].strip(), (form.get("next") or [None])[0]
    api = request.app.state.api
    if not presented or await api.read(api.tokens.verify, presented) is None:
        return login_form(target, "That token is unknown or revoked.")
    response = RedirectResponse(_safe_next(target), status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, presented, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>spotshift: sign in</title>
<style>body{{font:15px "DejaVu Sans",system-ui,sans-serif;background:#eef1f5;display:grid;place-items:center;
height:100vh;margin:0}}form{{background:#fff;padding:24px 28px;border-radius:10px;box-shadow:0 1px 3px #0002}}
input{{font:inherit;padding:6px 8px;width:320px;margin:8px 0}}.error{{color:#a32121}}</style></head>
<body><form method="post" action="/login"><h2>spotshift</h2>{note}
<label>API token<br><input type="password" name="token" autocomplete="off" autofocus></label>
<input type="hidden" name="next" value="{next}"><br><button type="submit">Sign in</button>
<p><small>Create one with <code>spotshift api token create --name NAME</code>.</small></p></form></body></html>"""
