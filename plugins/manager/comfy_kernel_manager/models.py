"""Model downloads for ``install_model``: into a model folder, resumable, checked.

The target folder comes from the catalog entry's ``save_path`` (``default``
means the folder for its ``type``) and must stay inside the kernel's model
folders: a ``save_path`` or ``filename`` that climbs out (``..``, absolute
paths, links) is refused before anything is written. Downloads go to
``<file>.part`` and resume from its size with an HTTP ``Range`` request; the
file only gets its final name once the size (and sha256, when the catalog
has one) matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# ComfyUI-Manager's model "type" values and the folder each goes to.
TYPE_FOLDERS = {
    "checkpoint": "checkpoints", "checkpoints": "checkpoints", "unclip": "checkpoints",
    "lora": "loras", "loras": "loras", "vae": "vae", "vae_approx": "vae_approx", "taesd": "vae_approx",
    "upscale": "upscale_models", "upscale_models": "upscale_models", "embedding": "embeddings",
    "embeddings": "embeddings", "controlnet": "controlnet", "t2i-adapter": "controlnet",
    "t2i-style": "controlnet", "clip": "text_encoders", "text_encoders": "text_encoders",
    "clip_vision": "clip_vision", "gligen": "gligen", "hypernetwork": "hypernetworks",
    "style_model": "style_models", "unet": "diffusion_models", "diffusion_model": "diffusion_models",
    "diffusion_models": "diffusion_models", "photomaker": "photomaker",
}
CHUNK = 1 << 20


class ModelError(Exception):
    pass


def parse_size(value: Any) -> int | None:
    """Catalog sizes are strings such as ``4.71MB``; None when not exact enough to check."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def approx_size(value: Any) -> float | None:
    match = re.match(r"^\s*([\d.]+)\s*([KMGT]?)B?\s*$", str(value or ""), re.I)
    if not match:
        return None
    return float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[match.group(2).upper()]


class Models:
    def __init__(self, kernel: Any):
        self.kernel = kernel

    def roots(self) -> list[str]:
        folders = self.kernel.folders
        out = [os.path.realpath(self.kernel.dirs.models)]
        for name in folders.names():
            if name == "custom_nodes":
                continue
            out.extend(os.path.realpath(p) for p in folders.paths(name))
        return out

    def target(self, model: dict[str, Any]) -> str:
        """The absolute file path for ``model``, or ModelError when it would leave the model folders."""
        filename = str(model.get("filename") or "")
        save_path = str(model.get("save_path") or "default")
        if not filename or "/" in filename or "\\" in filename or filename in (".", "..") or "\0" in filename:
            raise ModelError(f"refused: invalid filename {filename!r}")
        if save_path == "default":
            folder = TYPE_FOLDERS.get(str(model.get("type", "")).lower())
            if folder is None:
                raise ModelError(f"unknown model type {model.get('type')!r} and no save_path")
            paths = self.kernel.folders.paths(folder)
            base = paths[0] if paths else os.path.join(self.kernel.dirs.models, folder)
        else:
            if os.path.isabs(save_path) or "\\" in save_path or "\0" in save_path:
                raise ModelError(f"refused: save_path {save_path!r} must be relative to the models folder")
            first = save_path.split("/", 1)[0]
            paths = self.kernel.folders.paths(first) if first in self.kernel.folders.names() else []
            rest = save_path.split("/", 1)[1] if "/" in save_path else ""
            base = os.path.join(paths[0], rest) if paths else os.path.join(self.kernel.dirs.models, save_path)
        path = os.path.realpath(os.path.join(base, filename))
        if not any(path.startswith(root + os.sep) for root in self.roots()):
            raise ModelError(f"refused: {save_path}/{filename} is outside the model folders")
        return path

    def installed(self, model: dict[str, Any]) -> bool:
        try:
            return os.path.isfile(self.target(model))
        except ModelError:
            return False

    def download(self, model: dict[str, Any], progress: Callable[[int, int | None], None] | None = None
                 ) -> dict[str, Any]:
        url = str(model.get("url") or "")
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise ModelError(f"refused: model URL must be http(s): {url!r}")
        path = self.target(model)
        if os.path.isfile(path):
            return {"ok": True, "msg": f"{os.path.basename(path)} already exists", "path": path}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        part = path + ".part"
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        request = urllib.request.Request(url, headers={"User-Agent": "comfy-kernel-manager"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        with urllib.request.urlopen(request, timeout=60) as resp:
            if have and resp.status != 206:
                have = 0  # the server ignored Range: start over
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            with open(part, "ab" if have else "wb") as f:
                done = have
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        size = os.path.getsize(part)
        expected = parse_size(model.get("size"))
        if (total is not None and size != total) or (expected is not None and size != expected):
            raise ModelError(f"download incomplete: {size} bytes of {expected or total}; it resumes next time")
        sha = str(model.get("sha256") or model.get("hash") or "").lower()
        if sha:
            digest = hashlib.sha256()
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    digest.update(chunk)
            if digest.hexdigest() != sha:
                os.remove(part)
                raise ModelError(f"sha256 mismatch for {os.path.basename(path)}; the download was removed")
        os.replace(part, path)
        return {"ok": True, "msg": f"downloaded {os.path.basename(path)}", "path": path, "resumed_from": have}


# --- routes ------------------------------------------------------------------


def add_routes(routes: Any, mgr: Any) -> None:
    """``/manager/queue/install_model``: check the request now, download in the queue."""
    from .web import body_json, ok_json, text

    @routes.post("/manager/queue/install_model")
    async def install_model(request):
        item = await body_json(request)
        if not item.get("url") or not item.get("filename"):
            return text("invalid model request: url and filename are required", 400)
        known = any(m.get("url") == item.get("url") for m in mgr.channel().models)
        refused = mgr.guard.check(request, "install model", "middle" if known else "high")
        if refused is not None:
            return refused
        try:
            mgr.models.target(item)
        except ModelError as exc:
            return text(str(exc), 400)
        if urllib.parse.urlsplit(str(item["url"])).scheme.lower() not in ("http", "https"):
            return text("invalid model request: the URL must be http(s)", 400)
        task_id = await mgr.queue.add("install_model", item)
        return ok_json({"queued": task_id})
