"""Publishing: share ids, immutable snapshots, and what a published workflow needs.

A saved workflow (or a userdata workflow file, which the hub then tracks as
a saved workflow with ``source_file``) is published under one share id per
workflow. Each publish adds an immutable snapshot (the version's JSON, its
name and its asset list at that moment); the share id always shows the
newest. Unpublishing hides the share; publishing again shows it again with a
new snapshot.

Routes: ``GET/POST /api/userdata/{file}/publish``,
``POST /api/workflows/{workflow_id}/publish`` (the same for a saved
workflow; a comfy-kernel addition) and
``GET /api/workflows/published/{share_id}``. Whether the caller already has
an asset or a model is asked of the assets plugin over HTTP
(:mod:`comfy_kernel_hub.loopback`); importing goes through its
``POST /api/assets/import``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import json_response

from . import loopback
from .common import fail, identity, iso, json_object, owner_key
from .store import HubStore, is_conflict, load
from .workflows import owned

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".gguf", ".sft", ".onnx", ".pkl")
MAX_ASSETS = 500


# --- reading what is published ------------------------------------------------


async def read_userdata_workflow(request: Request, file: str) -> dict[str, Any]:
    """The caller's userdata file ``file`` (relative to their user root), parsed.

    Read through the userdata plugin's own route so that its rules decide
    who may read what; a missing file or user is a 404 here.
    """
    r = await loopback.call(request, "GET", "/api/userdata/" + urllib.parse.quote(file, safe=""))
    if r.status_code == 404:
        raise fail(404, "NOT_FOUND", f"workflow file {file[:200]!r} not found")
    if r.status_code in (401, 403):
        raise fail(r.status_code, "FORBIDDEN" if r.status_code == 403 else "UNAUTHORIZED",
                   "the user data of this caller is not accessible")
    if r.status_code != 200:
        raise fail(502, "USERDATA_ERROR", f"reading the workflow file answered {r.status_code}")
    try:
        content = orjson.loads(r.content)
    except orjson.JSONDecodeError:
        raise fail(400, "INVALID_WORKFLOW", "the workflow file is not JSON") from None
    if not isinstance(content, dict):
        raise fail(400, "INVALID_WORKFLOW", "the workflow file is not a JSON object")
    return content


def clean_file(file: str) -> str:
    file = file.strip().lstrip("/")
    if not file or "\x00" in file or any(part in ("", ".", "..") for part in file.split("/")):
        raise fail(400, "INVALID_PATH", "the workflow file path is not valid")
    return file


def asset_ids_of(body: dict[str, Any], key: str = "asset_ids") -> list[str]:
    ids = body.get(key)
    if ids is None:
        raise fail(400, "INVALID_BODY", f"{key} is required (use [] for none)")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids) or len(ids) > MAX_ASSETS:
        raise fail(400, "INVALID_BODY", f"{key} must be a list of at most {MAX_ASSETS} asset ids")
    return list(dict.fromkeys(ids))


def content_path(content_dir: str, content_hash: str) -> str:
    """Where the hub keeps a published copy of private content (named by its hash, so shared by shares)."""
    return os.path.join(content_dir, re.sub(r"[^a-z0-9]", "_", content_hash.lower()))


async def keep_content(request: Request, content_dir: str, asset: dict[str, Any]) -> None:
    """Copy a private asset's bytes out of the publisher's library.

    A published snapshot must stay importable after the publisher edits or
    deletes the asset, and the assets plugin only lets others import shared
    (seeded) assets; so the hub keeps its own copy of private content.
    """
    if not asset.get("hash"):
        return
    path = content_path(content_dir, asset["hash"])
    if os.path.exists(path):
        return
    r = await loopback.call(request, "GET", f"/api/assets/{urllib.parse.quote(asset['id'], safe='')}/content")
    if r.status_code != 200:
        raise fail(400, "INVALID_ASSETS", f"the content of asset {asset['id'][:64]!r} is not available")
    os.makedirs(content_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "wb") as f:
        f.write(r.content)
    os.replace(tmp, path)


async def snapshot_assets(request: Request, asset_ids: list[str], content_dir: str | None = None
                          ) -> list[dict[str, Any]]:
    """Freeze what the publisher's assets are now (id, name, hash, kind); 400 for unknown ids."""
    out = []
    for asset_id in asset_ids:
        r = await loopback.call(request, "GET", "/api/assets/" + urllib.parse.quote(asset_id, safe=""))
        if r.status_code != 200:
            raise fail(400, "INVALID_ASSETS", f"asset {asset_id[:64]!r} is not in your library")
        asset = r.json()
        tags = asset.get("tags") or []
        out.append({
            "id": asset["id"], "name": asset.get("name") or asset.get("display_name") or asset["id"],
            "hash": asset.get("asset_hash") or asset.get("hash"), "mime_type": asset.get("mime_type"),
            "model": "models" in tags, "public": bool(asset.get("is_immutable")),
            "preview_url": asset.get("preview_url") or f"/api/assets/{asset['id']}/content",
            "storage_url": f"/api/assets/{asset['id']}/content", "tags": tags,
        })
        if content_dir and not out[-1]["public"]:
            await keep_content(request, content_dir, out[-1])
    return out


async def asset_status(request: Request, assets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The snapshot's assets with ``in_library`` for the caller (by content hash)."""
    out = []
    for asset in assets:
        have = False
        if asset.get("hash"):
            r = await loopback.call(request, "HEAD", "/api/assets/hash/" + urllib.parse.quote(asset["hash"], safe=""))
            have = r.status_code == 200
        item = {k: asset.get(k) for k in ("id", "name", "preview_url", "storage_url", "model", "public")}
        item["in_library"] = have
        out.append(item)
    return out


def required_models(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """Model files a workflow refers to: node ``properties.models`` entries and model-file widget values."""
    found: dict[str, dict[str, Any]] = {}

    def add(name: str, directory: str | None, node: Any, url: str | None = None) -> None:
        entry = found.setdefault(name, {"name": name, "directory": directory, "nodes": []})
        if directory and not entry["directory"]:
            entry["directory"] = directory
        if url and not entry.get("url"):
            entry["url"] = url
        if node is not None and str(node) not in entry["nodes"]:
            entry["nodes"].append(str(node))

    def scan_values(values: Any, node_id: Any) -> None:
        items = values.values() if isinstance(values, dict) else values if isinstance(values, list) else []
        for value in items:
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
                add(value, None, node_id)

    def scan_ui_nodes(nodes: Any) -> None:
        for node in nodes or []:
            if not isinstance(node, dict):
                continue
            for model in (node.get("properties") or {}).get("models") or []:
                if isinstance(model, dict) and isinstance(model.get("name"), str):
                    add(model["name"], model.get("directory"), node.get("id"), model.get("url"))
            scan_values(node.get("widgets_values"), node.get("id"))

    if isinstance(workflow.get("nodes"), list):
        scan_ui_nodes(workflow["nodes"])
        for graph in (workflow.get("definitions") or {}).get("subgraphs") or []:
            if isinstance(graph, dict):
                scan_ui_nodes(graph.get("nodes"))
        for model in workflow.get("models") or []:
            if isinstance(model, dict) and isinstance(model.get("name"), str):
                add(model["name"], model.get("directory"), None, model.get("url"))
    else:
        for node_id, node in workflow.items():
            if isinstance(node, dict) and "class_type" in node:
                scan_values(node.get("inputs"), node_id)
    return list(found.values())


async def model_status(request: Request, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each required model with ``in_library``: whether the caller's assets (own or shared) hold that file name."""
    out = []
    for model in models:
        base = model["name"].replace("\\", "/").rsplit("/", 1)[-1]
        r = await loopback.call(request, "GET", "/api/assets",
                                params={"name_contains": base, "include_tags": "models", "limit": 100})
        names = {a.get("name") for a in r.json().get("assets", [])} if r.status_code == 200 else set()
        out.append({**model, "in_library": base in names or model["name"] in names})
    return out


# --- publishing -----------------------------------------------------------------


async def tracked_file_workflow(request: Request, store: HubStore, file: str) -> dict[str, Any]:
    """The saved workflow that mirrors a userdata file, brought up to the file's current content."""
    content = await read_userdata_workflow(request, file)
    owner = owner_key(request)
    record = await store.workflow_for_file(owner, file)
    if record is None:
        name = os.path.splitext(file.rsplit("/", 1)[-1])[0] or file
        try:
            return await store.create_workflow(owner=owner, created_by=identity(request).user_id, name=name,
                                               description="", default_view="workflow", workflow_json=content,
                                               source_file=file)
        except Exception as exc:
            if not is_conflict(exc):
                raise
            record = await store.workflow_for_file(owner, file, fresh=True)  # a concurrent first publish made it
            if record is None:
                raise
    latest = await store.get_version(record["id"], fresh=True)
    if load(latest["workflow_json"]) != content:
        await store.add_version(record["id"], None, content, identity(request).user_id)
        record = await store.get_workflow(record["id"], fresh=True)
    return record


async def publish_workflow(request: Request, store: HubStore, record: dict[str, Any], asset_ids: list[str], *,
                           version: int | None = None, listed: bool | None = None,
                           profile_username: str | None = None, hub_fields: dict[str, Any] | None = None,
                           name: str | None = None) -> dict[str, Any]:
    """Snapshot ``version`` (default: latest) of ``record`` under its share id; returns the share row."""
    snapshot_version = await store.get_version(record["id"], version, fresh=True)  # maybe added just now
    if snapshot_version is None:
        raise fail(404, "VERSION_NOT_FOUND", f"workflow has no version {version}")
    assets = await snapshot_assets(request, asset_ids, store.content_dir)
    return await store.publish(workflow=record, version=snapshot_version, name=name or record["name"],
                               assets=assets, listed=listed, profile_username=profile_username,
                               hub_fields=hub_fields)


def publish_info(share: dict[str, Any] | None, workflow_id: str = "") -> dict[str, Any]:
    """The seed's ``WorkflowPublishInfo`` (``publish_time`` null when never or no longer published)."""
    if share is None:
        return {"workflow_id": workflow_id, "share_id": "", "listed": False, "publish_time": None, "assets": []}
    live = share.get("unpublished_at") is None
    assets = [{k: a.get(k) for k in ("id", "name", "preview_url", "storage_url", "model", "public")}
              | {"in_library": True} for a in load(share["assets"], [])]
    return {"workflow_id": share["workflow_id"], "share_id": share["share_id"], "listed": bool(share["listed"]),
            "publish_time": iso(share["publish_time"]) if live else None, "assets": assets if live else [],
            "version_id": share["version_id"]}


def register(routes: RouteTable, store: HubStore) -> None:
    """Attach the publishing routes."""

    @routes.get("/workflows/published/{share_id}", api_only=True)
    async def get_published(request: Request) -> Response:
        share = await store.share(request.path_params["share_id"])
        if share is None:
            raise fail(404, "NOT_FOUND", "share not found")
        workflow = load(share["workflow_json"], {})
        assets = await asset_status(request, load(share["assets"], []))
        models = await model_status(request, required_models(workflow))
        return json_response({
            "share_id": share["share_id"], "workflow_id": share["workflow_id"], "name": share["name"],
            "listed": bool(share["listed"]), "publish_time": iso(share["publish_time"]), "workflow_json": workflow,
            "assets": assets, "models": models,
            "missing_assets": [a["id"] for a in assets if not a["in_library"]],
            "missing_models": [m["name"] for m in models if not m["in_library"]],
        })

    @routes.get("/userdata/{file:path}/publish", api_only=True)
    async def get_file_publish(request: Request) -> Response:
        file = clean_file(request.path_params["file"])
        await read_userdata_workflow(request, file)  # 404 when the file does not exist
        record = await store.workflow_for_file(owner_key(request), file)
        share = await store.share_of_workflow(record["id"]) if record else None
        return json_response(publish_info(share, record["id"] if record else ""))

    @routes.post("/userdata/{file:path}/publish", api_only=True)
    async def post_file_publish(request: Request) -> Response:
        file = clean_file(request.path_params["file"])
        body = await json_object(request)
        asset_ids = asset_ids_of(body)
        record = await tracked_file_workflow(request, store, file)
        share = await publish_workflow(request, store, record, asset_ids)
        return json_response(publish_info(share))

    @routes.post("/workflows/{workflow_id}/publish", api_only=True)
    async def publish_saved(request: Request) -> Response:
        """Publish a saved workflow (latest, or ``version``) unlisted under its share id."""
        body = await json_object(request)
        record = await owned(store, request, request.path_params["workflow_id"])
        version = body.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise fail(422, "VALIDATION_ERROR", "version must be an integer")
        share = await publish_workflow(request, store, record, asset_ids_of(body), version=version)
        return json_response(publish_info(share))

    @routes.post("/workflows/published/{share_id}/import", api_only=True)
    async def import_assets(request: Request) -> Response:
        """Copy a published workflow's assets into the caller's library (all, or ``published_asset_ids``).

        Shared (seeded) assets go through the assets plugin's
        ``POST /api/assets/import``; private ones are uploaded to the caller's
        library from the hub's copy. Content the caller already has is not
        copied again: their existing asset is returned.
        """
        share = await store.share(request.path_params["share_id"])
        if share is None:
            raise fail(404, "NOT_FOUND", "share not found")
        body = await json_object(request) if (await request.body()).strip() else {}
        published = {a["id"]: a for a in load(share["assets"], [])}
        wanted = asset_ids_of(body, "published_asset_ids") if "published_asset_ids" in body else list(published)
        unknown = [i for i in wanted if i not in published]
        if unknown:
            raise fail(400, "INVALID_ASSETS", f"not assets of this share: {', '.join(u[:64] for u in unknown[:10])}")
        imported = []
        for asset_id in wanted:
            mine = await import_one(request, store.content_dir, published[asset_id], share["share_id"])
            imported.append(as_asset_info(mine, published[asset_id]))
        return json_response({"assets": imported})

    @routes.delete("/workflows/published/{share_id}", api_only=True)
    async def unpublish(request: Request) -> Response:
        """Unpublish (a comfy-kernel addition beside ``DELETE /api/hub/workflows/{share_id}``)."""
        await unpublish_share(request, store, request.path_params["share_id"])
        return Response(b"", status_code=204)


async def unpublish_share(request: Request, store: HubStore, share_id: str) -> None:
    share = await store.share(share_id)
    if share is None:
        raise fail(404, "NOT_FOUND", "share not found")
    if share["owner"] != owner_key(request):
        raise fail(403, "FORBIDDEN", "only the publisher can unpublish this workflow")
    await store.unpublish(share_id)


async def own_copy(request: Request, content_hash: str) -> dict[str, Any] | None:
    r = await loopback.call(request, "GET", "/api/assets",
                            params={"asset_hash": content_hash, "include_public": "false", "limit": 1})
    assets = r.json().get("assets", []) if r.status_code == 200 else []
    return assets[0] if assets else None


async def import_one(request: Request, content_dir: str, asset: dict[str, Any], share_id: str) -> dict[str, Any]:
    """One published asset into the caller's library; returns the caller's asset."""
    if asset.get("hash"):
        mine = await own_copy(request, asset["hash"])
        if mine is not None:
            return mine
    if asset.get("public"):
        r = await loopback.call(request, "POST", "/api/assets/import",
                                json={"published_asset_ids": [asset["id"]], "share_id": share_id})
        if r.status_code == 200 and r.json().get("assets"):
            return r.json()["assets"][0]
        raise fail(502, "IMPORT_FAILED", f"the assets plugin could not import {asset['name']!r} ({r.status_code})")
    path = content_path(content_dir, asset.get("hash") or "")
    if not asset.get("hash") or not os.path.isfile(path):
        raise fail(410, "CONTENT_GONE", f"the published content of {asset['name']!r} is no longer available")
    with open(path, "rb") as f:
        data = f.read()
    tags = [t for t in asset.get("tags") or [] if isinstance(t, str)] or ["input"]
    r = await loopback.call(request, "POST", "/api/assets",
                            files={"file": (asset["name"], data, asset.get("mime_type") or "application/octet-stream")},
                            data={"tags": ",".join(tags), "name": asset["name"]})
    if r.status_code not in (200, 201):
        raise fail(502, "IMPORT_FAILED", f"the assets plugin refused {asset['name']!r} ({r.status_code})")
    return r.json()


def as_asset_info(asset: dict[str, Any], published: dict[str, Any]) -> dict[str, Any]:
    """The caller's new asset with the seed's ``AssetInfo`` fields added (it is now in their library)."""
    return {**asset, "preview_url": asset.get("preview_url") or f"/api/assets/{asset['id']}/content",
            "storage_url": f"/api/assets/{asset['id']}/content", "model": bool(published.get("model")),
            "public": False, "in_library": True}
