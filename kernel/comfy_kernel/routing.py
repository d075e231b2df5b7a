"""The route table plugins fill through ``ck_register_routes``.

ComfyUI serves every API route at its bare path and at ``/api`` + path;
:meth:`RouteTable.starlette_routes` produces both, with ``/api`` first so an
API route always beats a static file of the same path.

A route may describe itself for ``/openapi.json``: ``openapi={...}`` on the
decorator is an OpenAPI operation object (request body, parameters,
responses, and ``components`` its ``$ref`` s point to); see
:mod:`comfy_kernel.openapi.document`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Route, WebSocketRoute

Handler = Callable[..., Any]


@dataclass
class RouteSpec:
    path: str
    handler: Handler
    methods: list[str]
    api_mirror: bool = True
    api_only: bool = False
    name: str | None = None
    owner: str = "kernel"
    websocket: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    openapi: dict[str, Any] | None = None

    def paths(self) -> list[str]:
        if self.api_only:
            return ["/api" + self.path]
        if self.api_mirror:
            return ["/api" + self.path, self.path]
        return [self.path]


class RouteTable:
    """Collects routes; decorators mirror aiohttp's ``RouteTableDef``."""

    def __init__(self, owner: str = "kernel"):
        self.specs: list[RouteSpec] = []
        self.owner = owner

    def add(self, method: str | list[str], path: str, handler: Handler, **opts: Any) -> Handler:
        methods = [method] if isinstance(method, str) else list(method)
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        self.specs.append(RouteSpec(path, handler, [m.upper() for m in methods],
                                    owner=opts.pop("owner", self.owner), **opts))
        return handler

    def route(self, method: str | list[str], path: str, **opts: Any) -> Callable[[Handler], Handler]:
        def deco(handler: Handler) -> Handler:
            return self.add(method, path, handler, **opts)
        return deco

    def get(self, path: str, **opts: Any):
        return self.route("GET", path, **opts)

    def post(self, path: str, **opts: Any):
        return self.route("POST", path, **opts)

    def put(self, path: str, **opts: Any):
        return self.route("PUT", path, **opts)

    def patch(self, path: str, **opts: Any):
        return self.route("PATCH", path, **opts)

    def delete(self, path: str, **opts: Any):
        return self.route("DELETE", path, **opts)

    def head(self, path: str, **opts: Any):
        return self.route("HEAD", path, **opts)

    def websocket(self, path: str, **opts: Any):
        def deco(handler: Handler) -> Handler:
            self.specs.append(RouteSpec(path, handler, [], websocket=True,
                                        owner=opts.pop("owner", self.owner), **opts))
            return handler
        return deco

    def starlette_routes(self) -> list[Any]:
        """Merge specs sharing a path into one Starlette route per path."""
        api_first = sorted(self.specs, key=lambda s: 0 if s.api_only else 1)
        by_path: dict[str, list[RouteSpec]] = {}
        order: list[str] = []
        for spec in api_first:
            for path in spec.paths():
                if path not in by_path:
                    by_path[path] = []
                    order.append(path)
                by_path[path].append(spec)
        api = [p for p in order if p.startswith("/api/") or p == "/api"]
        bare = [p for p in order if p not in api]
        routes: list[Any] = []
        for path in api + bare:
            specs = by_path[path]
            ws = [s for s in specs if s.websocket]
            if ws:
                routes.append(WebSocketRoute(path, ws[0].handler))
                continue
            routes.append(Route(path, _dispatch(specs), methods=_methods(specs)))
        return routes


def _methods(specs: list[RouteSpec]) -> list[str]:
    out: list[str] = []
    for spec in specs:
        for m in spec.methods:
            if m not in out:
                out.append(m)
    return out


def _dispatch(specs: list[RouteSpec]) -> Handler:
    if len(specs) == 1:
        return specs[0].handler
    table: dict[str, Handler] = {}
    for spec in specs:
        for m in spec.methods:
            table.setdefault(m, spec.handler)

    async def handler(request):
        method = request.method
        fn = table.get(method) or (table.get("GET") if method == "HEAD" else None)
        return await fn(request)

    return handler
