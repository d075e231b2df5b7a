"""``/node_replacements``: which node class replaces an old one.

The frontend offers to swap nodes listed here when a workflow uses a class
that is gone. Plugins and packs add entries with :func:`register_replacement`
(ComfyUI's shape: ``{old: [{"old_node_id", "new_node_id", ...}]}``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import json_response
from comfy_kernel.routing import RouteTable

STATE_KEY = "node_replacements"


def register_replacement(kernel: Any, old_node_id: str, new_node_id: str, **extra: Any) -> None:
    """Declare that ``new_node_id`` replaces ``old_node_id`` (first registration is preferred)."""
    table: dict[str, list[dict[str, Any]]] = kernel.state.setdefault(STATE_KEY, {})
    table.setdefault(old_node_id, []).append({"old_node_id": old_node_id, "new_node_id": new_node_id, **extra})


def register(routes: RouteTable, kernel: Any) -> None:
    @routes.get("/node_replacements")
    async def node_replacements(request: Request) -> Response:
        return json_response(kernel.state.get(STATE_KEY, {}))
