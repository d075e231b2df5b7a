"""Random-weight model files in real key layouts, for tests of families that have no reference files.

Weights are N(0, 1/fan_in) (unit gain per layer, so activations stay O(1)),
biases N(0, 0.01^2), norm scales 1 + N(0, 0.02^2): a network built from them
produces varied, finite outputs, which is what detection, loading and
end-to-end tests need. Shapes come from the network itself (built on the meta
device) or from a key -> shape table.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file


def _norm_scale(key: str, shape: tuple[int, ...]) -> bool:
    name = key.lower()
    if name.endswith("gamma"):  # RMS-norm gains shaped [C, 1, 1(, 1)] (the Wan VAE)
        return True
    return len(shape) == 1 and name.endswith("weight") and any(
        tag in name for tag in ("norm", "ln_", "ln_final", "layer_norm", "scale"))


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int = 0,
                      dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if _norm_scale(key, shape):
            t = 1 + 0.02 * torch.randn(shape, generator=generator)
        elif len(shape) >= 2:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            if "embedding" in key or "positional" in key or "token" in key:
                fan_in = 2500  # embeddings: small rows
            t = torch.randn(shape, generator=generator) / fan_in**0.5
        else:
            t = 0.01 * torch.randn(shape, generator=generator)
        out[key] = t.to(dtype)
    return out


def module_shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Key -> shape of a module's parameters and persistent buffers (build it on the meta device)."""
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


#: where generated family files are kept between sessions (the repository's .cache, outside git)
FAMILY_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "checkpoints" / "families"


def cached_file(name: str, make: Callable[[], dict[str, torch.Tensor]],
                metadata: dict[str, str] | None = None) -> Path:
    """``FAMILY_CACHE/name``, written once from ``make()`` with the safetensors ``metadata`` (names carry a
    version: change it to regenerate)."""
    target = FAMILY_CACHE / name
    if target.is_file():
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    write(partial, make(), metadata)
    os.replace(partial, target)
    return target


def fp8_state_dict(sd: dict[str, torch.Tensor], scaled: bool = False,
                   skip: Callable[[str], bool] = lambda key: False) -> dict[str, torch.Tensor]:
    """``sd`` with its 2-d ``.weight`` tensors in float8_e4m3fn, as fp8 files ship them.

    ``scaled``: ComfyUI's "scaled fp8" layout (weight / scale stored, a
    ``<layer>.scale_weight`` per layer and a ``scaled_fp8`` marker).
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        if key.endswith(".weight") and tensor.ndim == 2 and not skip(key):
            weight = tensor.float()
            if scaled:
                scale = weight.abs().max() / 448.0
                out[key[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
                weight = weight / scale
            out[key] = weight.to(torch.float8_e4m3fn)
        else:
            out[key] = tensor
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def link(source: Path, target: Path) -> Path:
    """``source`` hard-linked as ``target`` (a copy across file systems), unless ``target`` is there.

    Not a symlink: the server's model folders refuse links that lead outside them.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        try:
            target.hardlink_to(source)
        except OSError:
            shutil.copyfile(source, target)
    return target
