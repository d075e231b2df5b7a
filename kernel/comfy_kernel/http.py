"""JSON responses, request bodies and errors shared by every route.

All JSON goes through orjson. orjson refuses integers outside the signed
64-bit range, which ComfyUI's ``/object_info`` contains (``max`` of
2**64 - 1), so :func:`dumps` falls back to the standard encoder for those.

Request bodies are parsed with :func:`parse_json_body` (or :func:`read_json`),
which enforces the two rules every JSON route shares: nesting of at most
:data:`MAX_JSON_DEPTH` levels (orjson reads deeper documents but cannot write
them back, so a deep ``extra_data`` used to fail only when it was stored), and
a JSON ``Content-Type`` on requests another origin's page made (see
:func:`check_json_content_type`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"

#: Deepest nesting a request body may have. orjson writes at most 254 levels and the
#: stores wrap a body's parts a few levels deeper; real workflows stay far below 64.
MAX_JSON_DEPTH = 128


def dumps(value: Any) -> bytes:
    """Serialise ``value`` to JSON bytes (orjson, stdlib fallback for big ints)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value, default=_default, separators=(",", ":")).encode()


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


class JSONResponse(Response):
    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return dumps(content)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(content, status_code=status, headers=headers)


class HTTPError(Exception):
    """Raise from a handler to answer ``status`` with a JSON error body.

    The body is :func:`error_body` (``{"error": {"type", "message", "details"},
    "code", "message"}``) unless ``body`` is given, in which case it is sent as is.
    """

    def __init__(self, status: int, message: str = "", *, type: str | None = None,
                 details: Any = "", body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _DEFAULT_TYPES.get(status, "error")
        self.details = details
        self.body = body
        self.headers = headers

    def response(self) -> Response:
        body = self.body if self.body is not None else error_body(self.message, self.type, self.details)
        return json_response(body, self.status, self.headers)


_DEFAULT_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                  415: "unsupported_media_type", 422: "invalid_input", 429: "too_many_requests"}


def error_body(message: str, type: str = "error", details: Any = "") -> dict[str, Any]:
    """ComfyUI's ``{"error": {type, message, details}}`` plus the cloud spec's ``code`` and ``message``
    (its ``ErrorResponse``), so clients written against either find what they read."""
    return {"error": {"type": type, "message": message, "details": details}, "code": type, "message": message}


def error_response(status: int, message: str, type: str | None = None, details: Any = "") -> Response:
    return HTTPError(status, message, type=type, details=details).response()


class JSONTooDeep(ValueError):
    """A JSON document nests deeper than :data:`MAX_JSON_DEPTH`."""

    def __init__(self, limit: int = MAX_JSON_DEPTH):
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


def json_too_deep_error() -> HTTPError:
    """The one answer to a body nested too deeply, whichever route it was sent to."""
    message = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    return HTTPError(400, message, type="json_too_deep", details={"max_depth": MAX_JSON_DEPTH})


def _orjson_depth_limit() -> int:
    """The deepest nesting ``orjson.dumps`` writes (255 levels in the versions known), found by trying."""
    def writes(depth: int) -> bool:
        value: Any = 0
        for _ in range(depth):
            value = [value]
        try:
            orjson.dumps(value)
            return True
        except orjson.JSONEncodeError:
            return False

    low, high = 0, 4096
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if writes(middle) else (low, middle - 1)
    return low


_ORJSON_DEPTH = _orjson_depth_limit()


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """``value`` unchanged, or :class:`JSONTooDeep` when its containers nest more than ``limit`` deep.

    Fast path: orjson (in C) refuses to write more than ``_ORJSON_DEPTH``
    levels, so ``value`` wrapped in ``_ORJSON_DEPTH - limit`` lists writes
    exactly when it is at most ``limit`` deep. When that fails (too deep, or
    not writable for another reason) the levels are counted in Python.
    """
    if _ORJSON_DEPTH > limit:
        wrapped = value
        for _ in range(_ORJSON_DEPTH - limit):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped)
            return value
        except orjson.JSONEncodeError:
            pass
    level, depth = [value], 0
    while level:
        depth += 1
        below: list[Any] = []
        for item in level:
            if type(item) is dict:
                item = item.values()
            elif type(item) is not list:
                continue
            if depth > limit:
                raise JSONTooDeep(limit)
            below.extend(child for child in item if type(child) is dict or type(child) is list)
        level = below
    return value


def loads_checked(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """:func:`loads` plus the depth rule (cheap: only bodies with that many brackets are walked)."""
    value = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") > limit:
        check_depth(value, limit)
    return value


JSON_MEDIA_TYPES = ("application/json", "text/json")


def check_json_content_type(request: Any) -> None:
    """Refuse (415) a body without a JSON ``Content-Type`` from another origin's page.

    Such a request reached us only because CORS mode let its origin through;
    a browser sends ``text/plain`` or a form type without asking the server
    first, so demanding JSON makes it ask (a preflight CORS can refuse).
    Same-origin pages and scripts keep sending what they like: the frontend
    posts settings as ``text/plain``, and ComfyUI's example scripts post form
    types.
    """
    state = request.scope.get("state") or {}
    if not state.get("cross_origin") or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in JSON_MEDIA_TYPES or media.endswith("+json"):
        return
    raise HTTPError(415, "A cross-origin request must send its JSON body as application/json",
                    type="unsupported_media_type")


async def parse_json_body(request: Any, *, empty: Any = ...) -> Any:
    """The request's JSON body after the shared rules; :class:`ValueError` when it is not JSON.

    ``empty`` is returned for an empty body when given. A body nested too deeply
    raises the 400 of :func:`json_too_deep_error`, a cross-origin non-JSON one a 415.
    """
    body = await request.body()
    if not body.strip() and empty is not ...:
        return empty
    check_json_content_type(request)
    try:
        return loads_checked(body)
    except JSONTooDeep:
        raise json_too_deep_error() from None


async def read_json(request, *, default: Any = ..., object_only: bool = False) -> Any:
    """Parse the request body as JSON, raising a 400 ``invalid_json`` on failure.

    ``default`` is returned for an empty body when given. ``object_only``
    requires a JSON object.
    """
    body = await request.body()
    if not body.strip():
        if default is not ...:
            return default
        raise HTTPError(400, "Request body is empty; a JSON body is required", type="invalid_json")
    try:
        value = await parse_json_body(request)
    except orjson.JSONDecodeError as exc:
        if default is not ... and not object_only:
            return default
        raise HTTPError(400, f"Request body is not valid JSON: {exc}", type="invalid_json") from None
    if object_only and not isinstance(value, dict):
        raise HTTPError(400, "Request body must be a JSON object", type="invalid_json")
    return value


def empty(status: int = 200) -> Response:
    return Response(b"", status_code=status)
