"""Global subgraph blueprints: ``/global_subgraphs`` and ``/global_subgraphs/{id}``.

Node packs ship blueprints as ``<pack>/subgraphs/*.json``; the optional
``comfyui-subgraph-blueprints`` package ships ``blueprints/*.json``. The list
leaves out each blueprint's data (it can be large); the frontend fetches it
by id when needed. Ids are a hash of the source and file, so they stay the
same across restarts.
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import HTTPError, json_response
from comfy_kernel.routing import RouteTable

from .frontend import package_dir
from .packs import loaded_pack_dirs

BLUEPRINTS_MODULE = "comfyui_subgraph_blueprints"


def _entry(path: str, source: str, node_pack: str) -> tuple[str, dict[str, Any]]:
    path = path.replace(os.sep, "/")
    entry_id = hashlib.sha256(f"{source}{path}".encode()).hexdigest()
    return entry_id, {"source": source, "name": os.path.splitext(os.path.basename(path))[0],
                      "info": {"node_pack": node_pack}, "path": path}


def find_blueprints(kernel: Any) -> dict[str, dict[str, Any]]:
    """Every blueprint, keyed by id; entries still carry their file ``path``."""
    found: dict[str, dict[str, Any]] = {}
    for pack, directory in loaded_pack_dirs(kernel).items():
        for path in sorted(glob.glob(os.path.join(glob.escape(directory), "subgraphs", "*.json"))):
            entry_id, entry = _entry(path, "custom_node", f"custom_nodes.{pack}")
            found[entry_id] = entry
    shipped = package_dir(BLUEPRINTS_MODULE, "blueprints")
    if shipped:
        for path in sorted(glob.glob(os.path.join(glob.escape(shipped), "*.json"))):
            if os.path.basename(path).split(".")[0] == "index":
                continue
            entry_id, entry = _entry(path, "templates", "comfyui")
            found[entry_id] = entry
    return found


def public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "path"}


def register(routes: RouteTable, kernel: Any) -> None:
    cache: dict[str, dict[str, dict[str, Any]]] = {}

    async def blueprints() -> dict[str, dict[str, Any]]:
        if "all" not in cache:
            cache["all"] = await run_in_threadpool(find_blueprints, kernel)
        return cache["all"]

    @routes.get("/global_subgraphs")
    async def list_subgraphs(request: Request) -> Response:
        return json_response({k: public(v) for k, v in (await blueprints()).items()})

    @routes.get("/global_subgraphs/{id}")
    async def get_subgraph(request: Request) -> Response:
        entry = (await blueprints()).get(request.path_params["id"])
        if entry is None:
            raise HTTPError(404, "No such subgraph blueprint", type="not_found")
        try:
            with open(entry["path"], encoding="utf-8") as f:
                data = f.read()
        except (OSError, UnicodeDecodeError):
            raise HTTPError(404, "Subgraph blueprint could not be read", type="not_found") from None
        if not data.strip():
            raise HTTPError(404, "Subgraph blueprint is empty", type="not_found")
        return json_response({**public(entry), "data": data})
