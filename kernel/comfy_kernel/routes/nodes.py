"""``/object_info`` and ``/object_info/{node_class}`` from the node registry."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from ..http import JSON_TYPE, json_response
from ..kernel import Kernel
from ..routing import RouteTable


def register(routes: RouteTable, kernel: Kernel) -> None:
    @routes.get("/object_info")
    async def get_object_info(request: Request) -> Response:
        body = kernel.object_info.current() or await asyncio.to_thread(kernel.object_info.body)
        return Response(body, media_type=JSON_TYPE)

    @routes.get("/object_info/{node_class:path}")
    async def get_object_info_node(request: Request) -> Response:
        name = request.path_params["node_class"]
        return json_response(await asyncio.to_thread(kernel.object_info.one, name))
