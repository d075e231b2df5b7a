"""aiohttp-style routes of node packs, served by the kernel's Starlette app.

ComfyUI is an aiohttp server: packs decorate handlers with
``@PromptServer.instance.routes.get("/path")`` at import time, receive an
aiohttp ``Request`` and return ``web.json_response(...)`` or raise
``web.HTTPNotFound()``. Here the decorators only record the routes
(:data:`PACK_ROUTES`); when the app is assembled the plugin registers each
one with the kernel (mirrored at ``/api`` like every ComfyUI route) behind
:func:`adapt_handler`, which hands the pack a :class:`CompatRequest` with the
aiohttp request API packs use and turns whatever it returns into a Starlette
response.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

log = logging.getLogger(__name__)

try:  # multidict comes with aiohttp, a dependency of this plugin; keep the layer importable without it.
    from multidict import CIMultiDict, MultiDict, MultiDictProxy
except ImportError:  # pragma: no cover - exercised only in stripped environments
    CIMultiDict = MultiDict = MultiDictProxy = None  # type: ignore[assignment,misc]


def _aiohttp_web() -> Any:
    """aiohttp's ``web`` module once some pack has imported aiohttp, else None.

    A handler can only return or raise aiohttp objects after aiohttp was imported,
    so the server never imports it (a fifth of a second) for packs that don't use it.
    """
    if "aiohttp" not in sys.modules:
        return None
    from aiohttp import web

    return web


# --- recording routes -------------------------------------------------------------------


@dataclass
class PackRoute:
    """One route a pack declared: ``method`` is ``"*"`` for any method, ``"STATIC"`` for files."""

    method: str
    path: str
    handler: Any
    kwargs: dict[str, Any] = field(default_factory=dict)


class RouteTableDef:
    """The decorator table behind ``PromptServer.instance.routes`` (aiohttp's RouteTableDef API)."""

    def __init__(self) -> None:
        self._items: list[PackRoute] = []

    def __iter__(self) -> Iterator[PackRoute]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> PackRoute:
        return self._items[index]

    def route(self, method: str, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        def decorator(handler: Any) -> Any:
            self._items.append(PackRoute(method.upper(), path, handler, kwargs))
            return handler
        return decorator

    def get(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        return self.route("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        return self.route("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        return self.route("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        return self.route("DELETE", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        return self.route("HEAD", path, **kwargs)

    def view(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        return self.route("*", path, **kwargs)

    def static(self, prefix: str, path: str, **kwargs: Any) -> None:
        self._items.append(PackRoute("STATIC", prefix, os.fspath(path), kwargs))

    def add(self, item: Any) -> None:
        """Accept an aiohttp ``RouteDef``/``StaticDef`` (``web.get(...)``, ``web.static(...)``) or a PackRoute."""
        if isinstance(item, PackRoute):
            self._items.append(item)
        elif hasattr(item, "prefix") and hasattr(item, "path") and not hasattr(item, "handler"):
            self._items.append(PackRoute("STATIC", item.prefix, os.fspath(item.path), dict(getattr(item, "kwargs", {}))))
        elif hasattr(item, "handler"):
            self._items.append(PackRoute(str(item.method).upper(), item.path, item.handler,
                                         dict(getattr(item, "kwargs", {}))))
        else:
            raise TypeError(f"not a route definition: {item!r}")


#: Every route packs declared, through ``PromptServer.instance.routes`` or ``app.add_routes``.
PACK_ROUTES = RouteTableDef()


class CompatRouter:
    """``app.router``: the ``add_get``/``add_route``/``add_static`` calls packs make."""

    def __init__(self, table: RouteTableDef):
        self._table = table
        self.frozen = False  # True once the server serves its routes (later ones are not served)

    def freeze(self) -> None:
        self.frozen = True

    def add_route(self, method: str, path: str, handler: Any, **kwargs: Any) -> PackRoute:
        route = PackRoute(method.upper(), path, handler, kwargs)
        self._table.add(route)
        return route

    def add_get(self, path: str, handler: Any, **kwargs: Any) -> PackRoute:
        kwargs.pop("allow_head", None)
        return self.add_route("GET", path, handler, **kwargs)

    def add_post(self, path: str, handler: Any, **kwargs: Any) -> PackRoute:
        return self.add_route("POST", path, handler, **kwargs)

    def add_put(self, path: str, handler: Any, **kwargs: Any) -> PackRoute:
        return self.add_route("PUT", path, handler, **kwargs)

    def add_patch(self, path: str, handler: Any, **kwargs: Any) -> PackRoute:
        return self.add_route("PATCH", path, handler, **kwargs)

    def add_delete(self, path: str, handler: Any, **kwargs: Any) -> PackRoute:
        return self.add_route("DELETE", path, handler, **kwargs)

    def add_static(self, prefix: str, path: str, **kwargs: Any) -> None:
        self._table.static(prefix, path, **kwargs)

    def routes(self) -> list[PackRoute]:
        return list(self._table)


class CompatApp(dict):
    """``PromptServer.instance.app``: routes go to the kernel, storage is a dict.

    ``on_startup``/``on_shutdown`` callbacks run at the kernel's start-up and
    shutdown; ``middlewares`` appended by packs are not applied (the kernel's
    middleware stack is Starlette's) and are logged once at start-up.
    """

    def __init__(self, table: RouteTableDef):
        super().__init__()
        self.router = CompatRouter(table)
        self._table = table
        self.middlewares: list[Any] = []
        self.on_startup: list[Any] = []
        self.on_shutdown: list[Any] = []
        self.on_cleanup: list[Any] = []
        self.cleanup_ctx: list[Any] = []
        self.frozen = False

    def freeze(self) -> None:
        self.frozen = True
        self.router.freeze()

    def add_routes(self, routes: Any) -> list[Any]:
        items = list(routes)
        for item in items:
            self._table.add(item)
        return items

    def __hash__(self) -> int:  # usable as a key, as aiohttp's Application is
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


# --- path translation ----------------------------------------------------------------------

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


def starlette_path(path: str) -> str:
    """aiohttp ``{name}``/``{name:regex}`` → Starlette ``{name}``/``{name:path}``.

    A regex that can match ``/`` (``.*``, ``.+``, ``[^{}]+`` ...) becomes the
    ``path`` converter; other regexes become a plain segment (the constraint
    is not enforced).
    """
    def convert(match: re.Match[str]) -> str:
        name, regex = match.group(1), match.group(2)
        if regex and ("." in regex or "/" in regex or "^{}" in regex):
            return "{" + name + ":path}"
        return "{" + name + "}"
    return _PARAM.sub(convert, path)


# --- the request façade --------------------------------------------------------------------


class _Content:
    """``request.content``: the body as aiohttp's StreamReader offers it."""

    def __init__(self, request: Request):
        self._request = request
        self._body: bytes | None = None
        self._pos = 0

    async def _all(self) -> bytes:
        if self._body is None:
            self._body = await self._request.body()
        return self._body

    async def read(self, n: int = -1) -> bytes:
        body = await self._all()
        end = len(body) if n is None or n < 0 else min(len(body), self._pos + n)
        chunk, self._pos = body[self._pos:end], end
        return chunk

    async def readany(self) -> bytes:
        return await self.read()

    async def iter_chunked(self, n: int) -> Any:  # pragma: no cover - async generator
        while True:
            chunk = await self.read(n)
            if not chunk:
                return
            yield chunk


class FileField:
    """An uploaded file in ``await request.post()`` (aiohttp's FileField attributes)."""

    def __init__(self, upload: Any):
        self.name = getattr(upload, "name", None)
        self.filename = upload.filename
        self.file = upload.file
        self.content_type = upload.content_type or "application/octet-stream"
        self.headers = dict(upload.headers or {})


class CompatRequest(dict):
    """The subset of ``aiohttp.web.Request`` that node pack handlers use.

    It is a dict (aiohttp requests are mutable mappings for per-request
    storage); ``match_info``, ``query``, ``headers``, ``read()``, ``text()``,
    ``json()``, ``post()``, ``content`` and ``app`` behave as in aiohttp.
    """

    def __init__(self, request: Request, app: CompatApp | None = None):
        super().__init__()
        self._request = request
        self.app = app
        self.method = request.method
        self.path = request.url.path
        self.match_info: dict[str, str] = {k: str(v) for k, v in request.path_params.items()}
        pairs = list(request.query_params.multi_items())
        self.query = MultiDictProxy(MultiDict(pairs)) if MultiDict is not None else dict(pairs)
        self.headers = CIMultiDict(request.headers.items()) if CIMultiDict is not None else request.headers
        self.cookies = dict(request.cookies)
        self.content = _Content(request)
        self._post: Any = None

    # -- url pieces --
    @property
    def url(self) -> Any:
        try:
            from yarl import URL

            return URL(str(self._request.url))
        except ImportError:  # pragma: no cover
            return str(self._request.url)

    @property
    def rel_url(self) -> Any:
        query = self._request.url.query
        relative = self.path + (f"?{query}" if query else "")
        try:
            from yarl import URL

            return URL(relative)
        except ImportError:  # pragma: no cover
            return relative

    @property
    def path_qs(self) -> str:
        return str(self.rel_url)

    @property
    def query_string(self) -> str:
        return self._request.url.query

    @property
    def host(self) -> str:
        return self._request.headers.get("host", "")

    @property
    def scheme(self) -> str:
        return self._request.url.scheme

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def remote(self) -> str | None:
        client = self._request.client
        return client.host if client else None

    @property
    def content_type(self) -> str:
        return self._request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()

    @property
    def content_length(self) -> int | None:
        value = self._request.headers.get("content-length")
        return int(value) if value and value.isdigit() else None

    @property
    def can_read_body(self) -> bool:
        return True

    @property
    def body_exists(self) -> bool:
        return bool(self.content_length) or "transfer-encoding" in self._request.headers

    @property
    def starlette(self) -> Request:
        """The underlying Starlette request (comfy-kernel extension)."""
        return self._request

    # -- body --
    async def read(self) -> bytes:
        return await self.content._all()

    async def text(self) -> str:
        return (await self.read()).decode("utf-8")

    async def json(self, *, loads: Callable[[str], Any] | None = None) -> Any:
        body = await self.read()
        return loads(body.decode("utf-8")) if loads is not None else orjson.loads(body)

    async def post(self) -> Any:
        """Form fields: strings, and :class:`FileField` for uploads."""
        if self._post is None:
            pairs: list[tuple[str, Any]] = []
            if self.method in ("POST", "PUT", "PATCH"):
                form = await self._request.form()
                for key, value in form.multi_items():
                    pairs.append((key, value if isinstance(value, str) else FileField(value)))
            self._post = MultiDictProxy(MultiDict(pairs)) if MultiDict is not None else dict(pairs)
        return self._post


# --- responses ----------------------------------------------------------------------------------


def to_starlette(result: Any) -> Response:
    """Turn what a pack handler returned (or raised) into a Starlette response."""
    if isinstance(result, Response):
        return result
    aioweb = _aiohttp_web()
    if aioweb is not None and isinstance(result, aioweb.StreamResponse):
        return _from_aiohttp(result)
    if result is None:
        return Response(b"", status_code=200)
    if isinstance(result, (dict, list)):
        return JSONResponse(result)
    if isinstance(result, (bytes, bytearray)):
        return Response(bytes(result))
    if isinstance(result, str):
        return PlainTextResponse(result)
    raise TypeError(f"unsupported response type from a node pack handler: {type(result).__name__}")


def _from_aiohttp(resp: Any) -> Response:
    aioweb = _aiohttp_web()
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
    if isinstance(resp, aioweb.FileResponse):
        path = os.fspath(resp._path)
        if not os.path.isfile(path):
            return Response(b"", status_code=404)
        headers.pop("Content-Type", None)
        return FileResponse(path, status_code=resp.status, headers=headers)
    if not isinstance(resp, aioweb.Response):
        raise TypeError("streaming aiohttp responses (web.StreamResponse/WebSocketResponse) are not supported")
    body = resp.body
    if body is None:
        data = b""
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    else:  # an aiohttp Payload wrapping bytes, a str or a file object
        value = getattr(body, "_value", b"")
        if hasattr(value, "read"):
            value = value.read()
        data = value.encode(getattr(body, "encoding", None) or "utf-8") if isinstance(value, str) else bytes(value)
    return Response(data, status_code=resp.status, headers=headers)


def adapt_handler(handler: Any, app: CompatApp | None = None) -> Callable[[Request], Any]:
    """Wrap a pack handler (``handler(request)``, sync or async) as a Starlette endpoint."""

    async def endpoint(request: Request) -> Response:
        try:
            result = handler(CompatRequest(request, app))
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            aioweb = _aiohttp_web()
            if aioweb is not None and isinstance(exc, aioweb.HTTPException):
                return _from_aiohttp(exc)
            raise
        return to_starlette(result)

    endpoint.__name__ = getattr(handler, "__name__", "pack_handler")
    endpoint.__doc__ = getattr(handler, "__doc__", None)
    return endpoint
