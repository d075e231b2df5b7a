"""One kernel route per area, dispatching to the area's own operations.

The kernel matches a request against its routes one after another, and
routes registered with ``api_only`` are tried before ``/api/prompt``. The
billing plugin has twenty-odd operations; registering each would add as
many pattern matches to every request the server answers, ``POST /prompt``
included. Instead each area (``/api/billing/...``, ``/api/admin/billing/...``)
is one catch-all route, and :class:`SubRoutes` finds the operation only for
requests that are under it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from comfy_kernel.http import HTTPError

Handler = Callable[[Request], Awaitable[Response]]


class SubRoutes:
    """Operations under one prefix; ``mount`` registers the single kernel route that serves them."""

    def __init__(self, prefix: str):
        self.prefix = prefix.rstrip("/")
        self.routes: list[tuple[Any, dict[str, Any], dict[str, Handler]]] = []
        self._by_path: dict[str, dict[str, Handler]] = {}

    def route(self, method: str, path: str, **_ignored: Any) -> Callable[[Handler], Handler]:
        if not path.startswith(self.prefix + "/"):
            raise ValueError(f"{path} is not under {self.prefix}")

        def deco(handler: Handler) -> Handler:
            methods = self._by_path.get(path)
            if methods is None:
                regex, _fmt, convertors = compile_path("/api" + path)
                methods = self._by_path[path] = {}
                self.routes.append((regex, convertors, methods))
            methods[method] = handler
            return handler

        return deco

    def get(self, path: str, **opts: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **opts)

    def post(self, path: str, **opts: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **opts)

    def put(self, path: str, **opts: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **opts)

    def paths(self) -> list[str]:
        return ["/api" + p for p in self._by_path]

    def mount(self, table: Any) -> None:
        table.add(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], self.prefix + "/{operation:path}",
                  self.dispatch, api_only=True)

    async def dispatch(self, request: Request) -> Response:
        path = request.scope["path"]
        for regex, convertors, methods in self.routes:
            match = regex.match(path)
            if match is None:
                continue
            method = request.method
            handler = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
            if handler is None:
                raise HTTPError(405, "Method not allowed", type="method_not_allowed",
                                body={"code": "method_not_allowed", "message": "Method not allowed"},
                                headers={"Allow": ", ".join(methods)})
            params = {name: convertors[name].convert(value) for name, value in match.groupdict().items()}
            request.scope["path_params"] = params
            return await handler(request)
        raise HTTPError(404, "Not found", type="not_found", body={"code": "not_found", "message": "Not found"})
