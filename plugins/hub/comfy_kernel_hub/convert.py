"""The hub's conversion routes; the conversion itself is the kernel's (:mod:`comfy_kernel.convert`).

Routes: ``POST /api/workflows/convert`` (any workflow → prompt), and
``POST /api/workflows/{workflow_id}/queue`` /
``POST /api/workflows/published/{share_id}/queue``, which convert a saved or
published workflow and queue it with ``POST /api/prompt``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.convert import (  # noqa: F401  (re-exported for code that imported them from here)
    ConversionError,
    Converter,
    Result,
    convert_workflow,
    is_api_format,
    object_info_of,
)
from comfy_kernel.http import json_response

from . import loopback
from .common import fail, json_object, owner_key
from .store import HubStore, load

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable


def register(routes: RouteTable, store: HubStore, kernel: Any) -> None:
    """Attach the conversion and queue-by-id routes."""

    def conversion(workflow: Any) -> Result:
        try:
            return convert_workflow(workflow, object_info_of(kernel))
        except ConversionError as exc:
            raise fail(422, "NOT_CONVERTIBLE", str(exc)) from None

    @routes.post("/workflows/convert", api_only=True)
    async def convert_route(request: Request) -> Response:
        body = await json_object(request)
        result = conversion(body["workflow"] if isinstance(body.get("workflow"), dict) else body)
        return json_response({"prompt": result.prompt, "missing_nodes": result.missing_nodes,
                              "warnings": result.warnings})

    async def queue(request: Request, workflow: dict[str, Any]) -> Response:
        body = await json_object(request) if (await request.body()).strip() else {}
        result = conversion(workflow)
        if result.missing_nodes:
            raise fail(400, "MISSING_NODES", f"nodes not installed: {', '.join(result.missing_nodes)}",
                       missing_nodes=result.missing_nodes)
        extra_data = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        if not is_api_format(workflow):
            pnginfo = extra_data.setdefault("extra_pnginfo", {})
            if isinstance(pnginfo, dict):
                pnginfo.setdefault("workflow", workflow)
        submit: dict[str, Any] = {"prompt": result.prompt, "extra_data": extra_data}
        for key in ("client_id", "front", "number", "prompt_id", "partial_execution_targets"):
            if key in body:
                submit[key] = body[key]
        r = await loopback.call(request, "POST", "/api/prompt", json=submit)
        try:
            answer = r.json()
        except ValueError:
            answer = {"error": r.text}
        if isinstance(answer, dict):
            answer.setdefault("warnings", result.warnings)
        return json_response(answer, r.status_code)

    @routes.post("/workflows/published/{share_id}/queue", api_only=True)
    async def queue_published(request: Request) -> Response:
        share = await store.share(request.path_params["share_id"])
        if share is None:
            raise fail(404, "NOT_FOUND", "share not found")
        return await queue(request, load(share["workflow_json"], {}))

    @routes.post("/workflows/{workflow_id}/queue", api_only=True)
    async def queue_saved(request: Request) -> Response:
        """Queue a saved workflow: the latest version, or ``?version=N``."""
        record = await store.get_workflow(request.path_params["workflow_id"])
        if record is None or record["owner"] != owner_key(request):
            raise fail(404, "NOT_FOUND", "workflow not found")
        wanted = request.query_params.get("version")
        try:
            number = int(wanted) if wanted else None
        except ValueError:
            raise fail(400, "INVALID_QUERY", "version must be an integer") from None
        version = await store.get_version(record["id"], number)
        if version is None:
            raise fail(404, "VERSION_NOT_FOUND", f"workflow has no version {number}")
        return await queue(request, load(version["workflow_json"], {}))
