"""``/object_info`` and ``/object_info/{node_class}`` from the node registry."""

from __future__ import annotations

import asyncio
import ipaddress

from starlette.requests import Request
from starlette.responses import Response

from ..http import JSON_TYPE, json_response
from ..kernel import Kernel
from ..routing import RouteTable


def wants_gzip(client_host: str | None, accept_encoding: str) -> bool:
    """True for a client on another machine that accepts gzip (not for loopback or unknown peers)."""
    if client_host is None or "gzip" not in accept_encoding.lower():
        return False
    try:
        return not ipaddress.ip_address(client_host.split("%")[0]).is_loopback
    except ValueError:
        return False


def register(routes: RouteTable, kernel: Kernel) -> None:
    @routes.get("/object_info")
    async def get_object_info(request: Request) -> Response:
        """Every node's contract; gzip-compressed for clients on other machines that accept it.

        On loopback, inflating costs the client more than reading the plain bytes, so local
        clients (and a reverse proxy on the same machine, which compresses on its own) get them plain.
        """
        cache = kernel.object_info
        body = cache.current() or await asyncio.to_thread(cache.body)
        client = request.client
        if wants_gzip(client.host if client else None, request.headers.get("accept-encoding", "")):
            gzipped = cache.gzipped_now(body) or await asyncio.to_thread(cache.gzipped, body)
            return Response(gzipped, media_type=JSON_TYPE,
                            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(body, media_type=JSON_TYPE, headers={"Vary": "Accept-Encoding"})

    @routes.get("/object_info/{node_class:path}")
    async def get_object_info_node(request: Request) -> Response:
        name = request.path_params["node_class"]
        return json_response(await asyncio.to_thread(kernel.object_info.one, name))
