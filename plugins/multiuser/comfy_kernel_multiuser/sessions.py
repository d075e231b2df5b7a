"""Sign-in sessions: ``/api/auth/session`` and the ``session`` cookie.

The cookie holds a 256-bit random token; the database holds its SHA-256, so
a leaked database does not yield live sessions. The cookie is ``HttpOnly``
(no script can read it), ``SameSite=Lax`` (not sent on cross-site
sub-requests) and ``Secure`` whenever the request came over TLS.

CSRF: a state-changing request authenticated only by the cookie must prove it
comes from this server's own pages — an ``X-CSRF-Token`` header equal to the
session's token, or an ``Origin`` (or ``Sec-Fetch-Site: same-origin``) showing
a same-origin request. :mod:`.enforcement` applies that rule.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import delete, select, update
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from comfy_kernel.routing import RouteTable

from .context import MultiUser, auth_method, client_address, fail, identity_of, json_body, ok, throttle
from .store import digest, iso, new_token, now, sessions
from .users import PAGE_HEADERS, _page, verify_password

COOKIE = "session"


def is_https(request: Request, mu: MultiUser) -> bool:
    return request.url.scheme in ("https", "wss") or mu.settings.tls


def set_session_cookie(response: Response, request: Request, mu: MultiUser, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=mu.settings.session_ttl, path="/", httponly=True,
                        samesite="lax", secure=is_https(request, mu))


def clear_session_cookie(response: Response, request: Request, mu: MultiUser) -> None:
    response.set_cookie(COOKIE, "", max_age=0, expires=0, path="/", httponly=True, samesite="lax",
                        secure=is_https(request, mu))


async def create_session(mu: MultiUser, request: Request, user_id: str) -> tuple[str, str]:
    """Store a new session; returns (cookie token, CSRF token). Always a fresh token (no fixation)."""
    token, csrf = new_token(), new_token()
    t = now()
    await mu.store.run(sessions.insert().values(
        token_hash=digest(token), user_id=user_id, csrf_token=csrf, created_at=t,
        expires_at=t + mu.settings.session_ttl, address=client_address(request),
        user_agent=(request.headers.get("user-agent") or "")[:300]))
    return token, csrf


async def password_sign_in(mu: MultiUser, request: Request, body: dict[str, Any]) -> str:
    """Check username and password with lockouts; returns the user id or raises 401/429."""
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise fail(400, "invalid_request", "username and password are required")
    address = client_address(request)
    user_key, addr_key = f"user:{username.strip().lower()}", f"addr:{address}"
    wait = mu.limiter.locked(user_key) or mu.limiter.locked(addr_key, mu.settings.max_failures * 4)
    if wait is not None:
        await mu.audit.record("signin", outcome="locked", address=address, username=username[:64])
        raise fail(429, "locked_out", "Too many failed sign-ins; try again later",
                   headers={"Retry-After": str(int(wait) + 1)})
    row = await mu.store.user_by_name(username.strip())
    valid = await asyncio.to_thread(verify_password, row["password_hash"] if row else None, password)
    if row is None or not valid or row["disabled"]:
        mu.limiter.fail(user_key, addr_key)
        await mu.audit.record("signin", outcome="failure", address=address, username=username[:64],
                              user_id=row["id"] if row else None)
        raise fail(401, "invalid_credentials", "Wrong username or password")
    mu.limiter.succeed(user_key)
    return row["id"]


def register(routes: RouteTable, mu: MultiUser) -> None:
    @routes.post("/auth/session", api_only=True)
    async def post_session(request: Request) -> Response:
        """Sign in: a username/password body, or an API key or Bearer JWT (never the cookie itself)."""
        throttle(mu, "signin", request)
        body = await json_body(request, required=False)
        identity = identity_of(request)
        if body.get("username") is not None or body.get("password") is not None:
            user_id = await password_sign_in(mu, request, body)
            method = "password"
        elif identity.authenticated and auth_method(identity) in ("api_key", "jwt"):
            user_id, method = identity.user_id, auth_method(identity)
        else:
            raise fail(401, "unauthorized", "Send a username and password, an API key or a Bearer token")
        token, csrf = await create_session(mu, request, user_id)
        await mu.audit.record("signin", user_id=user_id, address=client_address(request), method=method)
        response = ok({"success": True, "expiresIn": mu.settings.session_ttl, "csrf_token": csrf,
                       "user_id": user_id})
        set_session_cookie(response, request, mu, token)
        return response

    @routes.get("/auth/session", api_only=True)
    async def get_session(request: Request) -> Response:
        identity = identity_of(request)
        if not identity.authenticated:
            return ok({"authenticated": False})
        info: dict[str, Any] = {"authenticated": True, "user_id": identity.user_id,
                                "workspace_id": identity.workspace_id, "method": auth_method(identity),
                                "is_admin": identity.is_admin}
        if auth_method(identity) == "session":
            row = await mu.store.one(select(sessions.c.csrf_token, sessions.c.expires_at)
                                     .where(sessions.c.token_hash == identity.extra.get("session")))
            if row is not None:
                info.update(csrf_token=row["csrf_token"], expires_at=iso(row["expires_at"]))
        return ok(info)

    @routes.put("/auth/session", api_only=True)
    async def choose_workspace(request: Request) -> Response:
        """Switch the workspace a browser session acts in (the frontend cannot send Comfy-Workspace)."""
        identity = identity_of(request)
        if not identity.authenticated or auth_method(identity) != "session":
            raise fail(401, "unauthorized", "Only a signed-in browser session can choose its workspace")
        workspace_id = (await json_body(request)).get("workspace_id")
        if not isinstance(workspace_id, str) or await mu.store.membership(workspace_id, identity.user_id) is None:
            raise fail(404, "not_found", "Workspace not found or not a member")
        await mu.store.run(update(sessions).where(sessions.c.token_hash == identity.extra.get("session"))
                           .values(workspace_id=workspace_id))
        return ok({"success": True, "workspace_id": workspace_id})

    @routes.delete("/auth/session", api_only=True)
    async def delete_session(request: Request) -> Response:
        """Sign out: revoke the session when the request proved it is ours, and clear the cookie."""
        identity = identity_of(request)
        if identity.authenticated and auth_method(identity) == "session":
            await mu.store.run(delete(sessions).where(sessions.c.token_hash == identity.extra.get("session")))
            await mu.audit.record("signout", user_id=identity.user_id, address=client_address(request))
        response = ok({"success": True})
        clear_session_cookie(response, request, mu)
        return response

    @routes.get("/auth/login", api_mirror=False)
    async def login_page(request: Request) -> Response:
        return HTMLResponse(_page("login.html"), headers=PAGE_HEADERS)

    @routes.get("/auth/login.js", api_mirror=False)
    async def login_script(request: Request) -> Response:
        return Response(_page("login.js"), media_type="text/javascript", headers={"Cache-Control": "no-store"})
