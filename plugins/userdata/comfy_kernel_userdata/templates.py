"""Workflow templates: the templates packages at ``/templates`` and packs' examples.

``comfyui-workflow-templates`` is split into a JSON package (every workflow
and ``index*.json``) and media bundles (thumbnails, about 525 MB). ComfyUI
serves nothing when any asset is missing; here each request is looked up on
its own in every installed templates folder, so with only the JSON package
the dialog lists every template and a missing thumbnail is just a 404.

Node packs ship example workflows in one of the folders of
:data:`EXAMPLE_FOLDERS`; ``/workflow_templates`` lists them and
``/api/workflow_templates/<pack>/<file>`` serves them.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from comfy_kernel.files.paths import UnsafePath, safe_join
from comfy_kernel.http import json_response
from comfy_kernel.routing import RouteTable

from .frontend import package_dir
from .packs import all_pack_dirs, loaded_pack_dirs

EXAMPLE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


def template_dirs() -> list[str]:
    """Installed template folders: the JSON package first, then media bundles."""
    dirs: list[str] = []
    json_dir = package_dir("comfyui_workflow_templates_json", "templates")
    if json_dir:
        dirs.append(json_dir)
    media: list[str] = []
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("comfyui-workflow-templates-media"):
            media.append(name.replace("-", "_"))
    for module in sorted(set(media)):
        found = package_dir(module, "templates")
        if found and found not in dirs:
            dirs.append(found)
    legacy = package_dir("comfyui_workflow_templates", "templates")
    if legacy and legacy not in dirs:
        dirs.append(legacy)
    return dirs


def templates_version() -> str | None:
    for name in ("comfyui-workflow-templates", "comfyui-workflow-templates-core"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def find_in(dirs: list[str], relative: str) -> str | None:
    """The first regular file named ``relative`` inside one of ``dirs``."""
    if not relative or "\x00" in relative:
        return None
    for directory in dirs:
        try:
            path = safe_join(directory, relative)
        except UnsafePath:
            return None
        if os.path.isfile(path):
            return path
    return None


def example_folder(pack_dir: str) -> str | None:
    for name in EXAMPLE_FOLDERS:
        path = os.path.join(pack_dir, name)
        if os.path.isdir(path):
            return path
    return None


def pack_examples(kernel: Any) -> dict[str, list[str]]:
    """``{pack: [workflow names]}`` for every pack that ships example workflows."""
    out: dict[str, list[str]] = {}
    for name, path in all_pack_dirs(kernel):
        for folder in EXAMPLE_FOLDERS:
            files = sorted(glob.glob(os.path.join(glob.escape(path), folder, "*.json")))
            if files:
                out[name] = [os.path.splitext(os.path.basename(f))[0] for f in files]
                break
    return out


def register(routes: RouteTable, kernel: Any) -> None:
    dirs = template_dirs()

    if dirs:
        @routes.get("/templates/{path:path}", api_mirror=False)
        async def template_file(request: Request) -> Response:
            path = find_in(dirs, request.path_params["path"])
            if path is None:
                return Response(b"", status_code=404)
            return FileResponse(path)

    @routes.get("/workflow_templates")
    async def workflow_templates(request: Request) -> Response:
        return json_response(pack_examples(kernel))

    @routes.get("/workflow_templates/{pack}/{file:path}", api_only=True)
    async def pack_example(request: Request) -> Response:
        pack_dir = loaded_pack_dirs(kernel).get(request.path_params["pack"])
        folder = example_folder(pack_dir) if pack_dir else None
        path = find_in([folder], request.path_params["file"]) if folder else None
        if path is None:
            return Response(b"", status_code=404)
        return FileResponse(path)
