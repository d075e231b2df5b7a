"""Small request/response helpers shared by the manager's routes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from comfy_kernel.http import json_response, parse_json_body


def text(body: str, status: int = 200) -> Response:
    return PlainTextResponse(body, status_code=status)


def ok_json(value: Any, status: int = 200) -> Response:
    return json_response(value, status)


async def body_json(request: Request) -> dict[str, Any]:
    """The JSON object body, or {} when empty or not an object (handlers validate fields)."""
    try:
        value = await parse_json_body(request, empty={})
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def param(request: Request, name: str) -> str | None:
    """A value from the query string (legacy GET form) or the JSON body (POST form)."""
    if name in request.query_params:
        return request.query_params[name]
    if request.method == "POST":
        value = (await body_json(request)).get(name)
        return None if value is None else str(value)
    return None
