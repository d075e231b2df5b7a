"""The background warm-up of the core nodes (the kernel's ``ck_warmup`` hook).

The node modules import torch and the model code only when a node first runs,
so that start-up stays fast; the warm-up imports them right after the server
answers, builds the tokenizer, and runs a few tensor and image operations once,
so that the first prompt finds everything ready.

With ``--preload`` it also loads the model files the last prompts loaded.
:func:`remember` records each loader call (the first time in a server's life
only, so prompts pay nothing for it) in ``<user>/comfy-kernel.models.json``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pkgutil
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: How many loader calls the record keeps and --preload repeats.
PRELOAD_LOADS = 3
#: The packages the warm-up imports: the model API, the samplers and the SD family (other
#: families are imported when a file of theirs is first detected).
MODEL_PACKAGES = ("model", "sampling", "components.clip", "families.sd")
RECORD_NAME = "comfy-kernel.models.json"

_seen: set[Any] = set()
_lock = threading.Lock()


def warm_up(kernel: Any) -> None:
    import_model_code()
    prime()
    if getattr(kernel.config, "preload", False):
        preload(kernel.dirs.user)


def import_model_code() -> None:
    """Import torch, the model and sampler packages, and the libraries the image nodes use."""
    import torch  # noqa: F401

    for package in MODEL_PACKAGES:
        try:
            pkg = importlib.import_module(f"{__package__}.{package}")
        except Exception:
            log.warning("warm-up: could not import %s.%s", __package__, package, exc_info=True)
            continue
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            try:
                importlib.import_module(info.name)
            except Exception:
                log.warning("warm-up: could not import %s", info.name, exc_info=True)
    for name in ("numpy", "PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin", "safetensors",
                 "comfy_kernel.gpu.loading"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def prime() -> None:
    """Build what the first sampling or image prompt would build: the tokenizer, first kernels."""
    import io

    import torch
    from PIL import Image

    tokenizer = _attr(f"{__package__}.components.clip.tokenizer", "default_tokenizer")
    if tokenizer is not None:
        try:
            tokenizer().encode("a photo")
        except Exception:
            log.warning("warm-up: the tokenizer failed", exc_info=True)
    image = torch.zeros((1, 8, 8, 3)).add_(0.5)
    pixels = (1.0 - image[0]).mul(255).clamp(0, 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(io.BytesIO(), format="PNG", compress_level=1)


def _attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:
        return None


# --- the record of used models and --preload ------------------------------------------


def _loaders() -> dict[str, Callable[..., Any]]:
    from .model import loading

    return {"checkpoint": lambda path: loading.load_checkpoint(path),
            "diffusion_model": lambda path: (loading.load_diffusion_model(path),),
            "vae": lambda path: (loading.load_vae(path),),
            "clip": lambda *args: (loading.load_clip(list(args[:-1]), args[-1]),)}


def remember(kind: str, *args: str) -> None:
    """Note that a loader node loaded ``args`` (file paths, then options) as ``kind``.

    Writes the record the first time a server sees that call only.
    """
    from .nodes import context

    try:
        user_dir = context.folders().dirs.user
    except RuntimeError:  # node classes called outside a server
        return
    entry = {"kind": kind, "args": list(args)}
    key = (user_dir, kind, args)
    if key in _seen:
        return
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
        try:
            _write_record(user_dir, entry)
        except Exception:
            log.debug("could not record the loaded model %s", args, exc_info=True)


def _write_record(user_dir: str, entry: dict[str, Any]) -> None:
    entries = [e for e in read_record(user_dir) if e != entry]
    entries.insert(0, entry)
    os.makedirs(user_dir, exist_ok=True)
    path = os.path.join(user_dir, RECORD_NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entries[:PRELOAD_LOADS], f)
    os.replace(tmp, path)


def read_record(user_dir: str) -> list[dict[str, Any]]:
    """The recorded loader calls, most recent first (empty when there is no record)."""
    try:
        with open(os.path.join(user_dir, RECORD_NAME), encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("args"), list)]


def preload(user_dir: str) -> int:
    """Repeat the recorded loader calls whose files still exist and load every model they give
    onto the default device; returns how many files were loaded."""
    loaders = _loaders()
    loaded = 0
    for entry in reversed(read_record(user_dir)):  # the most recent last: it ends up most recently used
        loader, args = loaders.get(entry.get("kind")), [str(a) for a in entry["args"]]
        paths = args[:-1] if entry.get("kind") == "clip" else args
        if loader is None or not paths or not all(os.path.isfile(p) for p in paths):
            continue
        try:
            for obj in loader(*args):
                patcher = getattr(obj, "patcher", obj)
                if patcher is not None:
                    with patcher.use():
                        pass
        except Exception:
            log.warning("preload: could not load %s", paths, exc_info=True)
            continue
        _seen.add((user_dir, entry["kind"], tuple(args)))
        loaded += 1
    if loaded:
        log.info("preloaded %d model file(s) used last time", loaded)
    return loaded
