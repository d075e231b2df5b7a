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

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send

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


class IndexedRouter(Router):
    """Starlette's router with a dictionary in front for paths without parameters.

    Starlette tries each route's regular expression in turn, so every request
    paid for every route before its own: with all plugins installed, a
    ``POST /prompt`` tried about 150 patterns. Here a fixed path goes straight
    to its route, and the answer is the same as the scan's: a path is indexed
    only if no earlier route could match it, and anything the indexed route does
    not fully match (another method, a parameterised path) takes the scan.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._index: dict[tuple[str, str], BaseRoute] = {}
        self._indexed = -1

    def _build_index(self) -> None:
        index: dict[tuple[str, str], BaseRoute] = {}
        earlier: list[BaseRoute] = []
        for route in self.routes:
            kind = "websocket" if isinstance(route, WebSocketRoute) else "http" if isinstance(route, Route) else None
            path = getattr(route, "path", None)
            if (kind is not None and isinstance(path, str) and not route.param_convertors
                    and (kind, path) not in index and not any(_may_match(r, path) for r in earlier)):
                index[(kind, path)] = route
            earlier.append(route)
        self._index = index
        self._indexed = len(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "lifespan":
            if self._indexed != len(self.routes):
                self._build_index()
            route = self._index.get((kind, get_route_path(scope)))
            if route is not None:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


def _may_match(route: BaseRoute, path: str) -> bool:
    regex = getattr(route, "path_regex", None)
    return True if regex is None else regex.match(path) is not None
