"""Assemble the Starlette app from the kernel's routes and the plugins' hooks.

Layers, outermost first: errors (a handler's exception becomes a JSON 4xx/5xx,
never a crash), the host/origin guard or CORS, request-size cap, identity,
cache-control headers, plugin middleware, then routing: API routes (``/api``
forms first, then bare forms), static mounts (extensions, plugins' static
dirs, the web root last), and a catch-all that answers 404/405 as ComfyUI does.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .http import HTTPError, error_body, json_response
from .identity import LOCAL_USER, Identity
from .kernel import Kernel
from .routing import IndexedRouter, RouteTable
from .storage.database import UnstorableText

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CORS_METHODS = "POST, GET, DELETE, PUT, PATCH, OPTIONS"
CORS_HEADERS = "Content-Type, Authorization, Comfy-User, X-API-Key"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Sec-Fetch-Site`` values of a request some other origin's page made.
FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})


NO_FRONTEND = ("No web frontend is installed, so there is no GUI. Add it with: "
               "pip install 'comfy-kernel-userdata[frontend]' (from a checkout: pip install -e "
               "'plugins/userdata[frontend]'), then restart.")


class BodyTooLarge(Exception):
    pass


def cache_control_for(path: str, status: int) -> str | None:
    """ComfyUI's cache-control table (spec/server.md §1.3)."""
    last = path.rsplit("/", 1)[-1]
    if path.endswith((".js", ".css")) or (last.startswith("index") and last.endswith(".json")):
        return "no-cache"
    if path.lower().endswith(IMAGE_SUFFIXES):
        if status in (200, 201, 202, 203, 204, 205, 206, 301, 308):
            return "public, max-age=86400"
        if status == 404:
            return "public, max-age=3600"
        if status in (302, 303, 307):
            return "no-cache"
    return None


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


@functools.lru_cache(maxsize=256)
def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostGuard:
    """Static Host allow-list plus the Host/Origin comparison.

    ComfyUI resolves the Host name on every request (slow, and open to DNS
    rebinding). Here a Host must be a loopback literal, ``localhost``, a
    listen address, an IP literal when listening on all interfaces, or a name
    from ``--allowed-hosts``; and an ``Origin`` must match the Host. An
    ``Origin: null`` (sandboxed iframes, ``data:`` and ``file:`` pages) is
    another origin, never this one.
    """

    def __init__(self, listen: str, allowed: list[str]):
        self.addresses = {a.strip().lower() for a in listen.split(",") if a.strip()}
        self.allowed = {a.strip().lower() for a in allowed}
        self.all_interfaces = bool(self.addresses & {"0.0.0.0", "::"})

    def host_ok(self, host: str) -> bool:
        name = _host_name(host)
        if not name or _is_loopback(name) or name in self.addresses or name in self.allowed:
            return True
        if self.all_interfaces:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    @staticmethod
    def origin_ok(host: str, origin: str) -> bool:
        """Whether ``origin`` is this server as reached through ``host`` (no Origin at all is fine)."""
        if not origin:
            return True
        if origin == "null" or not host:
            return False
        parts = urlsplit(origin)
        if not parts.hostname:
            return False
        origin_host = parts.hostname.lower()
        origin_port = parts.port
        host = host.lower()
        name = _host_name(host)
        host_port: int | None = None
        tail = host.rsplit("]", 1)[-1] if host.startswith("[") else host
        if ":" in tail and tail.count(":") == 1:
            try:
                host_port = int(tail.rsplit(":", 1)[1])
            except ValueError:
                return False
        if origin_host != name:
            return False
        if origin_port is None or host_port is None:
            return True
        return origin_port == host_port


class KernelMiddleware:
    """Pure-ASGI layer for the cross-cutting rules (fast: no per-request Request objects kept)."""

    def __init__(self, app: Any, kernel: Kernel):
        self.app = app
        self.kernel = kernel
        self.cors = kernel.config.enable_cors_header
        self.guard = HostGuard(kernel.config.listen or "127.0.0.1", kernel.config.allowed_hosts or [])
        self.limit = int(kernel.max_upload_size)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        origin = headers.get("origin", "")
        is_http = scope["type"] == "http"

        if not self.guard.host_ok(host):
            log.warning("refused request with Host %r (not an allowed host)", host)
            return await self._refuse(scope, receive, send, 403, "Host not allowed", "forbidden_host")
        method = scope["method"] if is_http else "GET"
        foreign = self._foreign(host, origin, headers.get("sec-fetch-site", ""), method)
        if foreign and not self._cors_allows(origin):
            log.warning("refused cross-origin request: Host %r, Origin %r, Sec-Fetch-Site %r", host, origin,
                        headers.get("sec-fetch-site"))
            return await self._refuse(scope, receive, send, 403, "Cross-origin request refused",
                                      "forbidden_origin")
        if is_http and scope["method"] == "OPTIONS":
            await self._send_plain(send, 200, b"", self._cors_headers(origin))
            return

        if is_http:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                return await self._too_large(send)
            receive = self._limited(receive)

        state = scope.setdefault("state", {})
        # Read by the JSON body parsers: a request another origin made (let through by CORS
        # mode) must say it is JSON, so a browser has to ask permission in a preflight first.
        state["cross_origin"] = foreign
        try:
            state["identity"] = self._identity(scope)
        except HTTPError as exc:
            return await self._refuse(scope, receive, send, exc.status, exc.message, exc.type, exc.body,
                                      exc.headers)

        if not is_http:
            await self.app(scope, receive, send)
            return

        path = scope["path"]
        cors_headers = self._cors_headers(origin)
        started = False

        async def send_wrapper(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                raw = list(message.get("headers", []))
                names = {k.lower() for k, _ in raw}
                value = cache_control_for(path, message["status"])
                if value and b"cache-control" not in names:
                    raw.append((b"cache-control", value.encode()))
                for k, v in cors_headers:
                    raw.append((k, v))
                message = {**message, "headers": raw}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BodyTooLarge:
            if not started:
                await self._too_large(send)
        except HTTPError as exc:
            if not started:
                await _send_response(exc.response(), scope, receive, send)
        except UnstorableText as exc:
            if not started:
                await _send_response(json_response(error_body(str(exc), "invalid_text"), 400), scope, receive, send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), path)
            if not started:
                await _send_response(json_response(error_body("Internal server error", "internal_error"), 500),
                                     scope, receive, send)

    def _foreign(self, host: str, origin: str, fetch_site: str, method: str) -> bool:
        """Whether a browser made this request for a page of another origin.

        ``Origin`` decides when present (``null`` included). Without it,
        ``Sec-Fetch-Site`` does for state-changing methods; a plain GET from
        another site (a link, an image) stays allowed, as in ComfyUI: routes
        that change state on GET check that themselves.
        """
        if origin:
            return not self.guard.origin_ok(host, origin)
        return method not in SAFE_METHODS and fetch_site in FOREIGN_FETCH_SITES

    def _cors_allows(self, origin: str) -> bool:
        """CORS mode lets the configured origin (any origin for ``*``) through, never ``null``."""
        if not self.cors or origin == "null":
            return False
        return self.cors == "*" or origin == self.cors

    def _identity(self, scope: dict) -> Identity:
        host = self.kernel.host
        if host.implemented("ck_resolve_identity"):
            identity = host.first_result("ck_resolve_identity", request=HTTPConnection(scope), kernel=self.kernel)
            if identity is not None:
                return identity
        if self.kernel.config.multi_user:
            user = HTTPConnection(scope).headers.get("comfy-user") or "default"
            return Identity(user_id=user)
        return LOCAL_USER

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        if not self.cors:
            return []
        allow = origin if (self.cors == "*" and origin) else self.cors
        out = [(b"access-control-allow-origin", allow.encode()),
               (b"access-control-allow-methods", CORS_METHODS.encode()),
               (b"access-control-allow-headers", CORS_HEADERS.encode()),
               (b"access-control-allow-credentials", b"true")]
        if allow != "*":
            out.append((b"vary", b"Origin"))
        return out

    def _limited(self, receive: Any) -> Any:
        total = 0
        limit = self.limit

        async def wrapped() -> dict:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise BodyTooLarge()
            return message

        return wrapped

    async def _too_large(self, send: Any) -> None:
        body = f"Maximum request body size {self.limit} exceeded.".encode()
        await self._send_plain(send, 413, body, [(b"content-type", b"text/plain; charset=utf-8")])

    async def _refuse(self, scope: dict, receive: Any, send: Any, status: int, message: str, type: str,
                      body: Any = None, headers: dict[str, str] | None = None) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        # ``headers`` carries what an identity hook's refusal needs (WWW-Authenticate, Retry-After).
        await _send_response(json_response(body if body is not None else error_body(message, type), status,
                                           headers), scope, receive, send)

    @staticmethod
    async def _send_plain(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        headers = list(headers) + [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _send_response(response: Response, scope: dict, receive: Any, send: Any) -> None:
    await response(scope, receive, send)


class SafeStatic(StaticFiles):
    """StaticFiles that answers directories with 403 and never follows symlinks out."""

    async def get_response(self, path: str, scope: dict) -> Response:
        full, stat = self.lookup_path(path)
        if stat is not None and os.path.isdir(full) and not path.endswith("index.html"):
            if not self.html:
                return Response(b"", status_code=403)
        return await super().get_response(path, scope)


async def no_frontend(request: Request) -> Response:
    """``/`` when no plugin serves a web frontend: say so, and how to add it, instead of an empty 404."""
    return PlainTextResponse(NO_FRONTEND + "\nThe ComfyUI API is served here (/api/...).\n", status_code=404)


async def not_found(request: Request) -> Response:
    if request.method in ("GET", "HEAD"):
        return Response(b"", status_code=404)
    return PlainTextResponse("405: Method Not Allowed", status_code=405, headers={"Allow": "GET,HEAD"})


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    from starlette.exceptions import HTTPException

    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return PlainTextResponse("405: Method Not Allowed", status_code=405, headers=dict(exc.headers or {}))
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return Response(b"", status_code=404)
    status = getattr(exc, "status_code", 400)
    return json_response(error_body(str(getattr(exc, "detail", exc)), "http_error"), status)


def build_app(kernel: Kernel) -> Starlette:
    """Build the ASGI app. ``kernel.load()`` must have run."""
    from .routes import register_kernel_routes

    table = RouteTable()
    register_kernel_routes(table, kernel)
    for impl in reversed(kernel.host.pm.hook.ck_register_routes.get_hookimpls()):
        name = kernel.host.pm.get_name(impl.plugin) or "?"
        plugin_table = RouteTable(owner=name)
        try:
            impl.function(**{k: v for k, v in {"routes": plugin_table, "kernel": kernel}.items()
                             if k in impl.argnames})
        except Exception as exc:
            log.exception("plugin %s failed to register routes", name)
            kernel.host.mark_failed(name, exc)
            continue
        table.specs.extend(plugin_table.specs)
    kernel.route_table = table

    routes: list[Any] = table.starlette_routes()
    for name, directory in sorted(kernel.extension_dirs.items()):
        routes.append(Mount(f"/extensions/{name}", app=SafeStatic(directory=directory, follow_symlink=False)))
    statics: list[tuple[str, str]] = []
    for result in kernel.host.call_each("ck_static_directories", kernel=kernel):
        statics.extend(result or [])
    statics.sort(key=lambda t: -len(t[0]))
    for prefix, directory in statics:
        if not os.path.isdir(directory):
            continue
        mount_at = "" if prefix in ("", "/") else prefix.rstrip("/")
        if not mount_at:
            kernel.web_root = directory
        routes.append(Mount(mount_at or "/", app=SafeStatic(directory=directory, html=False)))
    if kernel.web_root is None:
        routes.append(Route("/", no_frontend, methods=["GET", "HEAD"]))
    routes.append(Route("/{path:path}", not_found, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]))

    middleware = [Middleware(KernelMiddleware, kernel=kernel)]
    for result in kernel.host.call_each("ck_middleware", kernel=kernel):
        middleware.extend(result or [])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await kernel.startup()
        try:
            yield
        finally:
            await kernel.shutdown()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        return exc.response()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={404: _method_not_allowed, 405: _method_not_allowed,
                                        HTTPError: http_error})
    app.router = IndexedRouter(routes, lifespan=lifespan)
    app.state.kernel = kernel
    return app
