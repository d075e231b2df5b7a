"""Calls into the server's own HTTP API, in-process, as the current caller.

The hub needs what other plugins own: a userdata file, the caller's assets,
prompt validation and queueing. It asks for them through their public HTTP
routes rather than importing their code, so their permission rules (a
``--multi-user`` user must exist, assets are per owner...) apply unchanged.
The request goes through the whole ASGI app (identity, guards, routing)
without a socket: the caller's identity headers are forwarded as they came.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.requests import Request

# Headers that describe the original connection or body, not the caller.
_NOT_FORWARDED = {"host", "content-length", "content-type", "transfer-encoding", "connection", "origin",
                  "referer", "accept-encoding", "expect", "upgrade", "keep-alive", "range", "if-none-match",
                  "if-modified-since"}


async def call(request: Request, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """``method path`` against this server's app, with the caller's identity headers."""
    forwarded = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    forwarded.update(kwargs.pop("headers", None) or {})
    transport = httpx.ASGITransport(app=request.app, client=("127.0.0.1", 0))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60.0) as client:
        return await client.request(method, path, headers=forwarded, **kwargs)
