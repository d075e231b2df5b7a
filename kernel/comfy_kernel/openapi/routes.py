"""``GET /openapi.json`` (the document of :mod:`.document`) and ``GET /docs`` (a page that renders it).

The page is one self-contained HTML file: no script, style or font comes
from anywhere else, so it works on a machine without internet access.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..http import dumps
from ..routing import RouteTable
from .document import build

DOCS_PAGE = os.path.join(os.path.dirname(__file__), "docs.html")


def register(table: RouteTable, kernel: Any) -> None:
    cached: dict[str, bytes] = {}

    @table.get("/openapi.json", api_mirror=False, openapi={
        "responses": {"200": {"description": "This document", "content": {"application/json": {
            "schema": {"type": "object", "required": ["openapi", "info", "paths"]}}}}}})
    async def openapi_json(request: Request) -> Response:
        """This server's OpenAPI 3.1 document: every route of the kernel and of each installed plugin."""
        body = cached.get("doc")
        if body is None:
            route_table = getattr(kernel, "route_table", None) or table
            body = cached["doc"] = dumps(build(route_table.specs))
        return Response(body, media_type="application/json")

    @table.get("/docs", api_mirror=False, openapi={
        "responses": {"200": {"description": "An HTML page", "content": {"text/html": {
            "schema": {"type": "string"}}}}}})
    async def docs(request: Request) -> Response:
        """A readable rendering of ``/openapi.json`` (self-contained: works offline)."""
        page = cached.get("page")
        if page is None:
            with open(DOCS_PAGE, "rb") as f:
                page = cached["page"] = f.read()
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                                            "script-src 'unsafe-inline'; img-src 'self' data:"})
