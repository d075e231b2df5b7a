"""Who is calling, and whether they may: the ``ck_resolve_identity`` implementation.

Credentials, in order: ``X-API-Key``; ``Authorization: Bearer`` (our JWT);
the ``session`` cookie. With ``--auth`` every HTTP route and the WebSocket
require one of them, except the allow-list below. Everything else the kernel
and plugins serve outside their API routes (the frontend's static files) is
public, because it holds no user data.

Beyond "signed in or not" this layer enforces:

* CSRF on cookie-authenticated state changes (see :mod:`.sessions`), and no
  cookie authentication at all for cross-origin requests, so a permissive
  ``--enable-cors-header`` cannot hand another site a user's session;
* ``read``-only tokens may only use safe methods;
* administrator-only areas (node-pack installation, server logs, user admin);
* the workspace a session acts in (``Comfy-Workspace`` header, else the one
  chosen with ``PUT /api/auth/session``, else the personal one; membership
  checked), which becomes ``Identity.workspace_id`` and so the owner key of
  queue, history and assets;
* WebSocket ``clientId`` ownership: a client id belongs to the first owner
  that connects with it, so nobody can take over another user's event stream.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import bindparam, select
from starlette.requests import HTTPConnection
from starlette.routing import compile_path

from comfy_kernel.app import HostGuard
from comfy_kernel.http import HTTPError
from comfy_kernel.identity import Identity

from .context import FULL_SCOPES, MultiUser, fail, same
from .outputs import check_view
from .store import digest, hot, now, sessions, users
from .tokens import verify_access_token, verify_api_key

log = logging.getLogger(__name__)

#: Who an unauthenticated request on an allow-listed route is. ``__`` ids are
#: reserved: the userdata plugin refuses them, so they never own storage.
ANONYMOUS = Identity(user_id="__anonymous__", authenticated=False)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: (method or "*", path) pairs anyone may call; each path also with ``/api``.
PUBLIC_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/"),  # the frontend's index.html (a static page; LoginRedirect sends it to sign-in)
    ("GET", "/health"),
    ("GET", "/system_stats"),
    ("GET", "/features"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/oauth-protected-resource"),
    ("*", "/oauth/register"),
    ("*", "/oauth/token"),
    ("*", "/oauth/authorize"),
    ("*", "/auth/session"),
    ("POST", "/auth/token"),
    ("*", "/auth/setup"),
    ("GET", "/auth/setup.js"),
    ("GET", "/auth/login"),
    ("GET", "/auth/login.js"),
    ("GET", "/auth/consent"),
    ("GET", "/auth/consent.js"),
)

#: Paths whose Bearer token is not ours: the handler verifies it itself.
FOREIGN_BEARER = {"/api/auth/token"}

#: Areas only administrators may use: installing code, reading server logs, user administration.
ADMIN_PREFIXES = ("/manager/", "/customnode/", "/snapshot/", "/externalmodel/", "/comfyui_manager/",
                  "/v2/customnode/", "/v2/manager/", "/v2/snapshot/", "/v2/comfyui_manager/", "/internal/logs",
                  "/internal/files/", "/admin/")

WORKSPACE_HEADER = "comfy-workspace"
MAX_CLIENT_IDS = 100_000

_SESSION = hot(select(sessions.c.token_hash, sessions.c.csrf_token, sessions.c.expires_at, sessions.c.workspace_id,
                      users.c.id, users.c.is_admin, users.c.disabled, users.c.username,
                      users.c.personal_workspace_id)
               .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
               .where(sessions.c.token_hash == bindparam("hash")))


def _strip_api(path: str) -> str:
    return path[4:] if path.startswith("/api/") else path


class RoutePolicy:
    """Classifies a path: an API route of some plugin, an allow-listed route, or neither (static)."""

    def __init__(self, specs: list[Any]):
        patterns: list[re.Pattern[str]] = []
        for spec in specs:
            for path in spec.paths():
                regex, _, _ = compile_path(path)
                patterns.append(regex)
        self.patterns = patterns
        self.public = {(m, p) for m, p in PUBLIC_ROUTES}

    def is_api(self, path: str) -> bool:
        return any(p.match(path) for p in self.patterns)

    def is_public(self, method: str, path: str) -> bool:
        bare = _strip_api(path)
        if bare.startswith("/.well-known/oauth-protected-resource"):
            return method in SAFE_METHODS
        if method == "HEAD":
            method = "GET"
        return (method, bare) in self.public or ("*", bare) in self.public

    @staticmethod
    def is_admin_area(path: str) -> bool:
        bare = _strip_api(path)
        return any(bare.startswith(prefix) or bare + "/" == prefix for prefix in ADMIN_PREFIXES)


def policy(mu: MultiUser) -> RoutePolicy:
    if mu.policy is None:
        table = getattr(mu.kernel, "route_table", None)
        mu.policy = RoutePolicy(table.specs if table is not None else [])
    return mu.policy


def _same_origin(conn: HTTPConnection) -> bool:
    """Whether the browser says this request comes from a page of this server."""
    origin = conn.headers.get("origin")
    host = conn.headers.get("host", "")
    if origin and origin != "null":
        return HostGuard.origin_ok(host, origin)
    return conn.headers.get("sec-fetch-site") == "same-origin"


def _cross_origin(conn: HTTPConnection) -> bool:
    origin = conn.headers.get("origin")
    return bool(origin) and (origin == "null" or not HostGuard.origin_ok(conn.headers.get("host", ""), origin))


def session_identity(mu: MultiUser, conn: HTTPConnection, token: str, method: str) -> Identity | None:
    """The identity of a session cookie, or None (unknown, expired, cross-origin, or failed CSRF)."""
    if _cross_origin(conn):
        return None
    hashed = digest(token)
    row = mu.store.read_one(_SESSION, {"hash": hashed})
    if row is None or not same(row["token_hash"], hashed) or row["expires_at"] <= now() or row["disabled"]:
        return None
    if method not in SAFE_METHODS and conn.scope["type"] == "http":
        header = conn.headers.get("x-csrf-token")
        if not (same(header, row["csrf_token"]) or _same_origin(conn)):
            raise fail(403, "csrf_failed", "Cookie-authenticated changes need an X-CSRF-Token header "
                       "or a same-origin request")
    requested = conn.headers.get(WORKSPACE_HEADER)
    workspace_id = requested or row["workspace_id"] or row["personal_workspace_id"]
    role = mu.store.membership_sync(workspace_id, row["id"])
    if role is None and not requested:
        # The session's chosen workspace is gone (deleted, or the user left): back to the personal one.
        workspace_id = row["personal_workspace_id"]
        role = mu.store.membership_sync(workspace_id, row["id"])
    if role is None:
        raise fail(403, "forbidden", "Not a member of that workspace")
    return Identity(user_id=row["id"], workspace_id=workspace_id, authenticated=True,
                    is_admin=bool(row["is_admin"]), scopes=FULL_SCOPES,
                    extra={"method": "session", "role": role, "session": row["token_hash"],
                           "username": row["username"]})


def _unauthorized(mu: MultiUser, conn: HTTPConnection, message: str, code: str = "unauthorized") -> HTTPError:
    metadata = mu.base_url(conn) + "/.well-known/oauth-protected-resource"
    challenge = f'Bearer resource_metadata="{metadata}"'
    if code == "invalid_token":
        challenge += ', error="invalid_token"'
    return fail(401, code, message, headers={"WWW-Authenticate": challenge})


def resolve(mu: MultiUser, conn: HTTPConnection) -> Identity | None:
    """The kernel's identity hook body (None leaves the kernel's default, when the plugin is off)."""
    if not mu.enabled:
        return None
    if not mu.started:
        raise fail(503, "unavailable", "Authentication is not available; the server refuses all requests")
    scope = conn.scope
    is_ws = scope["type"] == "websocket"
    method = "GET" if is_ws else scope.get("method", "GET").upper()
    path = scope.get("path", "/")
    rules = policy(mu)
    public = not is_ws and rules.is_public(method, path)

    identity: Identity | None = None
    api_key = conn.headers.get("x-api-key")
    authorization = conn.headers.get("authorization", "")
    if api_key:
        identity = verify_api_key(mu, api_key.strip())
        if identity is None:
            _audit_failure(mu, conn, "api_key")
            raise _unauthorized(mu, conn, "Invalid, expired or revoked API key", "invalid_token")
    elif authorization[:7].lower() == "bearer " and path not in FOREIGN_BEARER:
        identity = verify_access_token(mu, authorization[7:].strip(), conn)
        if identity is None:
            _audit_failure(mu, conn, "jwt")
            raise _unauthorized(mu, conn, "Invalid or expired access token", "invalid_token")
    else:
        cookie = conn.cookies.get("session")
        if cookie:
            try:
                identity = session_identity(mu, conn, cookie, method)
            except HTTPError:
                if not public:
                    raise
                identity = None

    if identity is None:
        if public or (not is_ws and not rules.is_api(path)):
            return ANONYMOUS
        raise _unauthorized(mu, conn, "Sign-in required")

    if method not in SAFE_METHODS and "write" not in identity.scopes and not public:
        raise fail(403, "insufficient_scope", "This token may only read")
    if not public and rules.is_admin_area(path) and not identity.is_admin:
        raise fail(403, "forbidden", "Administrator role required")
    if is_ws:
        claim_client_id(mu, conn, identity)
    else:
        check_view(mu, conn, identity)
    return identity


_AUDITED: dict[tuple[str, str], float] = {}


def _audit_failure(mu: MultiUser, conn: HTTPConnection, method: str) -> None:
    """Audit a refused API key or token, at most once per address, kind and 10 seconds (no flooding)."""
    import asyncio
    import time

    address = conn.client.host if conn.client else "unknown"
    key = (address, method)
    t = time.monotonic()
    if t - _AUDITED.get(key, -1e9) < 10.0:
        return
    if len(_AUDITED) > 10_000:
        _AUDITED.clear()
    _AUDITED[key] = t
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.create_task(mu.audit.record("auth.refused", outcome="failure", address=address, method=method,
                                     path=conn.scope.get("path", "")[:200]))


def claim_client_id(mu: MultiUser, conn: HTTPConnection, identity: Identity) -> None:
    """Bind a WebSocket ``clientId`` to its first owner; refuse it to anyone else."""
    client_id = conn.query_params.get("clientId")
    if not client_id:
        return
    owner = mu.client_owners.get(client_id)
    if owner is None:
        if len(mu.client_owners) >= MAX_CLIENT_IDS:
            mu.client_owners.pop(next(iter(mu.client_owners)))
        mu.client_owners[client_id] = identity.key
    elif owner != identity.key:
        raise fail(403, "forbidden", "That client id belongs to another user")


def client_id_allowed(mu: MultiUser, client_id: str | None, identity: Identity) -> bool:
    """Whether a prompt may send its events to ``client_id`` (unclaimed ids are claimed here)."""
    if not client_id:
        return True
    owner = mu.client_owners.setdefault(client_id, identity.key)
    return owner == identity.key


class LoginRedirect:
    """ASGI middleware: send a browser that opens the app without a session to the sign-in page."""

    def __init__(self, app: Any, mu: MultiUser):
        self.app = app
        self.mu = mu

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD") \
                and scope.get("path") in ("/", "/index.html"):
            identity = scope.get("state", {}).get("identity")
            if identity is not None and not identity.authenticated and self.mu.enabled:
                headers = [(b"location", b"/auth/login"), (b"cache-control", b"no-store"),
                           (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 303, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


def register(routes: Any, mu: MultiUser) -> None:
    """``GET /api/admin/routes``: every route of every plugin and whether it is public (for audits and tests)."""
    from starlette.requests import Request
    from starlette.responses import Response

    from .context import ok, require_admin

    @routes.get("/admin/routes", api_only=True)
    async def list_routes(request: Request) -> Response:
        require_admin(request)
        rules = policy(mu)
        table = getattr(mu.kernel, "route_table", None)
        out = []
        for spec in table.specs if table is not None else []:
            methods = ["WS"] if spec.websocket else list(spec.methods)
            out.append({"paths": spec.paths(), "methods": methods, "owner": spec.owner,
                        "public": {m: (m != "WS" and all(rules.is_public(m, p) for p in spec.paths()))
                                   for m in methods},
                        "admin_only": any(rules.is_admin_area(p) for p in spec.paths())})
        return ok({"routes": out})
