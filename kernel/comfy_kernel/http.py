"""JSON responses and errors shared by every route.

All JSON goes through orjson. orjson refuses integers outside the signed
64-bit range, which ComfyUI's ``/object_info`` contains (``max`` of
2**64 - 1), so :func:`dumps` falls back to the standard encoder for those.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"


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

    The body is ``{"error": {"type", "message", "details"}}`` unless ``body``
    is given, in which case it is sent as is.
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
    return {"error": {"type": type, "message": message, "details": details}}


def error_response(status: int, message: str, type: str | None = None, details: Any = "") -> Response:
    return HTTPError(status, message, type=type, details=details).response()


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
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if default is not ... and not object_only:
            return default
        raise HTTPError(400, f"Request body is not valid JSON: {exc}", type="invalid_json") from None
    if object_only and not isinstance(value, dict):
        raise HTTPError(400, "Request body must be a JSON object", type="invalid_json")
    return value


def empty(status: int = 200) -> Response:
    return Response(b"", status_code=status)
