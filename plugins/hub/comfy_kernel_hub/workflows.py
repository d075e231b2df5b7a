"""Saved workflows: ``/api/workflows*`` (create, list, get, update, delete, content, versions, fork).

A workflow belongs to the request's owner key (workspace, else user). Other
owners get 404 for it, exactly as for a workflow that does not exist, so ids
cannot be probed; what others may see goes through a share id
(:mod:`comfy_kernel_hub.publishing`).

Versions are numbered from 1 and never change. A new version names the
version it was based on; when that is no longer the latest the answer is
409 with ``current_version``, and the client re-bases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import json_response

from .common import choice, fail, identity, int_param, iso, json_object, optional_str, owner_key
from .store import HubStore, VersionConflict, load

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable

VIEWS = ("workflow", "app")
MAX_NAME = 512


def workflow_json(record: dict[str, Any]) -> dict[str, Any]:
    """The seed's ``WorkflowResponse``."""
    out: dict[str, Any] = {
        "id": record["id"],
        "name": record["name"],
        "description": record["description"],
        "default_view": record["default_view"],
        "latest_version": record["latest_version"],
        "created_by": record["created_by"],
        "created_at": iso(record["created_at"]),
        "updated_at": iso(record["updated_at"]),
    }
    if record.get("forked_from_workflow_id"):
        out["forked_from"] = {"workflow_id": record["forked_from_workflow_id"],
                              "workflow_version_id": record["forked_from_version_id"]}
    if record.get("source_file"):
        out["source_file"] = record["source_file"]
    return out


def version_content_json(version: dict[str, Any]) -> dict[str, Any]:
    """The seed's ``WorkflowVersionContentResponse``."""
    return {"id": version["id"], "version": version["version"], "workflow_json": load(version["workflow_json"], {}),
            "created_by": version["created_by"], "created_at": iso(version["created_at"]),
            "dependency_asset_ids": []}


def check_workflow_body(value: Any) -> dict[str, Any]:
    """A workflow must be a JSON object: UI format (``nodes``/``links``) or API format (node id → node)."""
    if not isinstance(value, dict):
        raise fail(422, "VALIDATION_ERROR", "workflow_json must be a JSON object")
    return value


def check_view(body: dict[str, Any]) -> str | None:
    view = body.get("default_view")
    if view is not None and view not in VIEWS:
        raise fail(422, "VALIDATION_ERROR", "default_view must be 'workflow' or 'app'")
    return view


def version_number(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(422, "VALIDATION_ERROR", f"{name} must be a positive integer")
    return value


async def owned(store: HubStore, request: Request, wf_id: str) -> dict[str, Any]:
    """The caller's workflow, or 404 (also for other owners' workflows)."""
    record = await store.get_workflow(wf_id)
    if record is None or record["owner"] != owner_key(request):
        raise fail(404, "NOT_FOUND", f"workflow {wf_id[:64]!r} not found")
    return record


def register(routes: RouteTable, store: HubStore) -> None:
    """Attach the saved-workflow routes (``/api`` only: the seed writes them so)."""

    @routes.get("/workflows", api_only=True)
    async def list_workflows(request: Request) -> Response:
        q = request.query_params
        limit = int_param(q.get("limit"), "limit", 20, 1, 100)
        offset = int_param(q.get("offset"), "offset", 0, 0)
        sort = choice(q.get("sort"), "sort", ("create_time", "update_time", "name"), "create_time")
        order = choice(q.get("order"), "order", ("asc", "desc"), "desc")
        view = choice(q.get("default_view"), "default_view", VIEWS, None)
        rows, total = await store.list_workflows(owner_key(request), name=q.get("name") or None, default_view=view,
                                                 sort=sort, order=order, limit=limit, offset=offset)
        return json_response({"data": [workflow_json(r) for r in rows],
                              "pagination": {"offset": offset, "limit": limit, "total": total,
                                             "has_more": offset + len(rows) < total}})

    @routes.post("/workflows", api_only=True)
    async def create_workflow(request: Request) -> Response:
        body = await json_object(request)
        if "workflow_json" not in body:
            raise fail(422, "VALIDATION_ERROR", "workflow_json is required")
        content = check_workflow_body(body["workflow_json"])
        forked_from = None
        source_id = optional_str(body, "forked_from_workflow_id")
        source_version = optional_str(body, "forked_from_workflow_version_id")
        if source_id or source_version:
            forked_from = (source_id or "", source_version or "")
        record = await store.create_workflow(
            owner=owner_key(request), created_by=identity(request).user_id,
            name=optional_str(body, "name", max_len=MAX_NAME) or "Untitled workflow",
            description=optional_str(body, "description") or "", default_view=check_view(body) or "workflow",
            workflow_json=content, forked_from=forked_from)
        return json_response(workflow_json(record), 201)

    @routes.get("/workflows/{workflow_id}", api_only=True)
    async def get_workflow(request: Request) -> Response:
        return json_response(workflow_json(await owned(store, request, request.path_params["workflow_id"])))

    @routes.patch("/workflows/{workflow_id}", api_only=True)
    async def update_workflow(request: Request) -> Response:
        body = await json_object(request)
        record = await owned(store, request, request.path_params["workflow_id"])
        fields: dict[str, Any] = {}
        if "name" in body:
            name = optional_str(body, "name", max_len=MAX_NAME)
            if not name or not name.strip():
                raise fail(422, "VALIDATION_ERROR", "name must be a non-empty string")
            fields["name"] = name
        if "description" in body:
            fields["description"] = optional_str(body, "description") or ""
        if "default_view" in body:
            fields["default_view"] = check_view(body) or "workflow"
        if not fields:
            raise fail(422, "VALIDATION_ERROR", "nothing to update: send name, description or default_view")
        return json_response(workflow_json(await store.update_workflow(record["id"], fields)))

    @routes.delete("/workflows/{workflow_id}", api_only=True)
    async def delete_workflow(request: Request) -> Response:
        record = await owned(store, request, request.path_params["workflow_id"])
        await store.delete_workflow(record["id"])
        return Response(b"", status_code=204)

    @routes.get("/workflows/{workflow_id}/content", api_only=True)
    async def get_content(request: Request) -> Response:
        """The latest version, or any version with ``?version=N``."""
        record = await owned(store, request, request.path_params["workflow_id"])
        wanted = request.query_params.get("version")
        number = int_param(wanted, "version", 0, 1) if wanted else None
        version = await store.get_version(record["id"], number)
        if version is None:
            raise fail(404, "VERSION_NOT_FOUND", f"workflow has no version {number}",
                       latest_version=record["latest_version"])
        return json_response(version_content_json(version))

    @routes.post("/workflows/{workflow_id}/versions", api_only=True)
    async def create_version(request: Request) -> Response:
        body = await json_object(request)
        record = await owned(store, request, request.path_params["workflow_id"])
        if "base_version" not in body:
            raise fail(422, "VALIDATION_ERROR", "base_version is required")
        base = version_number(body["base_version"], "base_version")
        if "workflow_json" not in body:
            raise fail(422, "VALIDATION_ERROR", "workflow_json is required")
        content = check_workflow_body(body["workflow_json"])
        try:
            created = await store.add_version(record["id"], base, content, identity(request).user_id)
        except VersionConflict as exc:
            raise fail(409, "VERSION_CONFLICT",
                       f"version {base} is not the latest: the workflow is at version {exc.current}; "
                       f"fetch it and create your change with base_version {exc.current}",
                       current_version=exc.current, latest_version=exc.current, base_version=base) from None
        except KeyError:
            raise fail(404, "NOT_FOUND", "workflow not found") from None
        created["created_at"] = iso(created["created_at"])
        return json_response(created, 201)

    @routes.post("/workflows/{workflow_id}/fork", api_only=True)
    async def fork_workflow(request: Request) -> Response:
        body = await json_object(request)
        source = await owned(store, request, request.path_params["workflow_id"])
        if "source_version" not in body:
            raise fail(422, "VALIDATION_ERROR", "source_version is required")
        number = version_number(body["source_version"], "source_version")
        version = await store.get_version(source["id"], number)
        if version is None:
            raise fail(404, "VERSION_NOT_FOUND", f"workflow has no version {number}",
                       latest_version=source["latest_version"])
        name = optional_str(body, "name", max_len=MAX_NAME) or f"{source['name']} (fork)"
        record = await store.create_workflow(
            owner=owner_key(request), created_by=identity(request).user_id, name=name,
            description=source["description"], default_view=source["default_view"],
            workflow_json=load(version["workflow_json"], {}), forked_from=(source["id"], version["id"]))
        return json_response(workflow_json(record), 201)
