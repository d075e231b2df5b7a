"""Model-folder routes: ``/models``, ``/embeddings``, ``/experiment/models``, ``/view_metadata``."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import struct

from starlette.requests import Request
from starlette.responses import Response

from ..files.folders import PT_EXTENSIONS, content_category
from ..files.paths import UnsafePath, safe_join
from ..http import HTTPError, json_response
from ..kernel import Kernel
from ..routing import RouteTable

HIDDEN_FOLDERS = ("configs", "custom_nodes")
MAX_HEADER = 1024 * 1024


def read_safetensors_metadata(path: str, limit: int = MAX_HEADER) -> dict | None:
    """The ``__metadata__`` object of a safetensors header, or None."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return None
        (length,) = struct.unpack("<Q", raw)
        if length > limit:
            return None
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(header, dict):
        return None
    meta = header.get("__metadata__")
    return meta if isinstance(meta, dict) else None


def _experiment_files(directory: str, index: int) -> list[dict]:
    out = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if d != ".git" and not d.startswith(".")]
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in PT_EXTENSIONS:
                continue
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            out.append({"name": os.path.relpath(full, directory).replace(os.sep, "/"), "pathIndex": index,
                        "modified": st.st_mtime, "created": st.st_ctime, "size": st.st_size})
    return out


def _preview_candidates(model_path: str) -> list[bytes | str]:
    directory, base = os.path.split(model_path)
    stem = os.path.splitext(base)[0]
    found: list[bytes | str] = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            nstem, _ = os.path.splitext(name)
            if nstem in (stem, stem + ".preview") and content_category(name) == "image":
                found.append(os.path.join(directory, name))
    sibling = os.path.join(directory, stem + ".safetensors")
    if os.path.isfile(sibling):
        meta = read_safetensors_metadata(sibling, 8 * 1024 * 1024) or {}
        covers = meta.get("ssmd_cover_images")
        if covers:
            try:
                for item in json.loads(covers):
                    found.append(base64.b64decode(item))
            except (ValueError, TypeError):
                pass
    return found


def _to_webp(source: bytes | str) -> bytes | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.seek(0)
            out = io.BytesIO()
            img.save(out, "WEBP")
            return out.getvalue()
    except Exception:
        return None


def register(routes: RouteTable, kernel: Kernel) -> None:
    folders = kernel.folders

    @routes.get("/embeddings")
    async def get_embeddings(request: Request) -> Response:
        names = await asyncio.to_thread(folders.list, "embeddings")
        return json_response([os.path.splitext(n)[0] for n in names])

    @routes.get("/models")
    async def get_models(request: Request) -> Response:
        return json_response(folders.names())

    @routes.get("/models/{folder}")
    async def get_models_folder(request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in folders.folders:
            raise HTTPError(404, f"Unknown model folder: {folder}")
        if folder == "custom_nodes":
            return json_response([])
        return json_response(await asyncio.to_thread(folders.list, folder))

    @routes.get("/experiment/models")
    async def get_experiment_models(request: Request) -> Response:
        return json_response([{"name": name, "folders": folders.paths(name)}
                              for name in folders.names() if name not in HIDDEN_FOLDERS])

    @routes.get("/experiment/models/{folder}")
    async def get_experiment_folder(request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in folders.folders or folder in HIDDEN_FOLDERS:
            raise HTTPError(404, f"Unknown model folder: {folder}")

        def collect() -> list[dict]:
            out: list[dict] = []
            for index, directory in enumerate(folders.paths(folder)):
                if os.path.isdir(directory):
                    out.extend(_experiment_files(directory, index))
            return out

        return json_response(await asyncio.to_thread(collect))

    @routes.get("/experiment/models/preview/{folder}/{path_index}/{filename:path}")
    async def get_model_preview(request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in folders.folders or folder in HIDDEN_FOLDERS:
            raise HTTPError(404, f"Unknown model folder: {folder}")
        try:
            index = int(request.path_params["path_index"])
        except ValueError:
            raise HTTPError(400, "path_index must be an integer") from None
        paths = folders.paths(folder)
        if not 0 <= index < len(paths):
            raise HTTPError(404, "No such folder index")
        try:
            model_path = safe_join(paths[index], request.path_params["filename"], follow_links=True)
        except UnsafePath as exc:
            raise HTTPError(403, str(exc)) from None

        def render() -> bytes | None:
            for candidate in _preview_candidates(model_path):
                data = _to_webp(candidate)
                if data:
                    return data
            return None

        data = await asyncio.to_thread(render)
        if data is None:
            raise HTTPError(404, "No preview found")
        return Response(data, media_type="image/webp")

    @routes.get("/view_metadata/{folder}")
    async def get_view_metadata(request: Request) -> Response:
        folder = request.path_params["folder"]
        filename = request.query_params.get("filename")
        if not filename or not filename.endswith(".safetensors"):
            raise HTTPError(404, "filename must name a .safetensors file")
        path = folders.full_path(folder, filename)
        if path is None:
            raise HTTPError(404, "File not found")
        meta = await asyncio.to_thread(read_safetensors_metadata, path)
        if meta is None:
            raise HTTPError(404, "No metadata in file")
        return json_response(meta)
