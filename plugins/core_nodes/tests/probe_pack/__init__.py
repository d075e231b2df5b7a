"""A test-only node pack: ``TestProbe`` records any value it receives so a test can read it back.

``TestLoad`` is its counterpart for inputs: it hands a graph an exact value
a test wrote under ``<input>/probes/`` (a tensor, a LATENT, SVG documents).

Tensors are written as ``.npy`` files (dicts of tensors, such as LATENT, as
``.npz``) under ``<output>/probes/<name>``; a CONDITIONING is recorded as its
entries' shapes and options (tensors there by shape and mean); everything else
goes into the UI result as JSON-friendly text. ``TestConditioning`` makes a
CONDITIONING without a text encoder. Tests run graphs through a real server and
compare what the probes recorded.
"""

from __future__ import annotations

import json
import os
from typing import Any


class AnyType(str):
    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


def _output_dir() -> str:
    from comfy_kernel_core_nodes.nodes import context

    return context.output_dir()


def _describe(value: Any, path: str) -> Any:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        np.save(path + ".npy", value.detach().cpu().float().numpy())
        return {"tensor": os.path.basename(path) + ".npy", "shape": list(value.shape), "dtype": str(value.dtype)}
    if _is_conditioning(value):
        entries = [{"shape": list(t.shape), "options": {k: _option(v) for k, v in opts.items()}}
                   for t, opts in value]
        return {"value": entries, "type": "CONDITIONING"}
    if isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values()):
        arrays = {k: v.detach().cpu().float().numpy() for k, v in value.items() if isinstance(v, torch.Tensor)}
        np.savez(path + ".npz", **arrays)
        rest = {k: _plain(v) for k, v in value.items() if not isinstance(v, torch.Tensor)}
        return {"tensors": os.path.basename(path) + ".npz", "keys": sorted(arrays), "other": rest}
    return {"value": _plain(value), "type": type(value).__name__}


def _is_conditioning(value: Any) -> bool:
    import torch

    return isinstance(value, list) and bool(value) and all(
        isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], torch.Tensor) and isinstance(e[1], dict)
        for e in value)


def _option(value: Any) -> Any:
    """A conditioning option as JSON: tensors by shape and mean, tuples as lists, the rest as is."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"tensor_shape": list(value.shape), "mean": float(value.float().mean())}
    return _plain(list(value) if isinstance(value, tuple) else value)


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


class TestProbe:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": (AnyType("*"), {}), "name": ("STRING", {"default": "probe"})}}

    def probe(self, value: Any, name: str) -> dict[str, Any]:
        folder = os.path.join(_output_dir(), "probes")
        os.makedirs(folder, exist_ok=True)
        return {"ui": {"probe": [{"name": name, **_describe(value, os.path.join(folder, name))}]}}


class TestProbeList:
    """Like TestProbe, but receives a whole list (``INPUT_IS_LIST``) and records each item."""

    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": (AnyType("*"), {}), "name": ("STRING", {"default": "probe"})}}

    def probe(self, value: list[Any], name: list[str]) -> dict[str, Any]:
        folder = os.path.join(_output_dir(), "probes")
        os.makedirs(folder, exist_ok=True)
        items = [{"name": f"{name[0]}_{i}", **_describe(v, os.path.join(folder, f"{name[0]}_{i}"))}
                 for i, v in enumerate(value)]
        return {"ui": {"probe": items}}


class SvgDocuments:
    """What SVG outputs carry: the documents as file-likes in ``data``."""

    def __init__(self, data: list[Any]) -> None:
        self.data = data


class TestLoad:
    """Outputs ``<input>/probes/<name>``: ``.npy`` as a tensor, ``.npz`` as a dict (LATENT), ``.svg`` as SVG."""

    CATEGORY = "testing"
    RETURN_TYPES = (AnyType("*"),)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"name": ("STRING", {"default": ""})}}

    def load(self, name: str) -> tuple[Any]:
        import io

        import numpy as np
        import torch

        from comfy_kernel_core_nodes.nodes import context

        path = os.path.join(context.input_dir(), "probes", name)
        if name.endswith(".npy"):
            return (torch.from_numpy(np.load(path)),)
        if name.endswith(".npz"):
            with np.load(path) as data:
                return ({k: torch.from_numpy(data[k]) for k in data.files},)
        with open(path, "rb") as f:
            return (SvgDocuments([io.BytesIO(f.read())]),)


class TestConditioning:
    """A CONDITIONING without a text encoder: one entry of constant [1, tokens, width] and pooled [1, width]."""

    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"default": 1.0, "min": -1e9, "max": 1e9}),
                             "tokens": ("INT", {"default": 77, "min": 1, "max": 4096})},
                "optional": {"width": ("INT", {"default": 768, "min": 1, "max": 8192})}}

    def make(self, value: float, tokens: int, width: int = 768) -> tuple[list]:
        import torch

        return ([[torch.full((1, tokens, width), value), {"pooled_output": torch.full((1, width), value)}]],)


class TestModelStates:
    """Output node: every model the kernel's model manager holds, as ``key=state:loads`` UI text."""

    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "states"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}, "optional": {"after": (AnyType("*"), {})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")

    def states(self, after: Any = None) -> dict[str, Any]:
        from comfy_kernel import gpu

        models = gpu.model_manager().stats()["models"]
        return {"ui": {"states": [f"{m['key']}={m['state']}:{m['loads']}" for m in models]}}


NODE_CLASS_MAPPINGS = {"TestProbe": TestProbe, "TestProbeList": TestProbeList, "TestConditioning": TestConditioning,
                       "TestLoad": TestLoad, "TestModelStates": TestModelStates}
