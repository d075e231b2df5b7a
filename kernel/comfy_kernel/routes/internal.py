"""``/internal/*`` routes (served without an ``/api`` twin, as ComfyUI does)."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response

from ..http import HTTPError, empty, json_response, read_json
from ..kernel import Kernel
from ..routing import RouteTable


def register(routes: RouteTable, kernel: Kernel) -> None:
    internal = {"api_mirror": False}

    @routes.get("/internal/logs", **internal)
    async def logs(request: Request) -> Response:
        return json_response(kernel.logs.text())

    @routes.get("/internal/logs/raw", **internal)
    async def logs_raw(request: Request) -> Response:
        return json_response({"entries": list(kernel.logs.entries), "size": kernel.logs.terminal_size()})

    @routes.patch("/internal/logs/subscribe", **internal)
    async def logs_subscribe(request: Request) -> Response:
        body = await read_json(request, object_only=True)
        client_id = body.get("clientId")
        if not isinstance(client_id, str) or not client_id:
            raise HTTPError(400, "clientId (string) is required")
        if body.get("enabled"):
            kernel.logs.subscribers.add(client_id)
        else:
            kernel.logs.subscribers.discard(client_id)
        return empty()

    @routes.get("/internal/folder_paths", **internal)
    async def folder_paths(request: Request) -> Response:
        """Absolute server paths go to the operator (no auth plugin) and administrators only;
        other signed-in users get the folder names with empty lists."""
        identity = getattr(request.state, "identity", None)
        private = identity is not None and identity.authenticated and not identity.is_admin
        return json_response({name: [] if private else kernel.folders.paths(name) for name in kernel.folders.names()})

    @routes.get("/internal/files/{directory_type}", **internal)
    async def files(request: Request) -> Response:
        directory = kernel.dirs.by_type(request.path_params["directory_type"])
        if directory is None:
            return json_response({"error": "Invalid directory type"}, 400)
        if not os.path.isdir(directory):
            return json_response([])
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_file():
                    entries.append((entry.stat().st_mtime, entry.name))
        entries.sort(key=lambda t: t[0], reverse=True)
        return json_response([name for _, name in entries])
