"""Weights files: their tensor table without reading the data, their tensors, and how to read one part.

``.safetensors`` files are memory-mapped (nothing is copied until a tensor is
used, and a GPU load copies straight from the page cache); ``.ckpt``/``.pt``/
``.pth``/``.bin`` go through ``torch.load(weights_only=True)``, which never
runs pickled code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

SAFETENSORS = (".safetensors", ".sft")


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(SAFETENSORS)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a weights file, on the CPU."""
    path = Path(path)
    if is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


_SHAPES: dict[tuple[str, int, int], dict[str, tuple[int, ...]]] = {}


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor (from the header for .safetensors; cached per file version)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    shapes = _SHAPES.get(key)
    if shapes is None:
        if is_safetensors(path):
            from comfy_kernel.gpu.loading import read_header

            shapes = {k: tuple(v["shape"]) for k, v in read_header(path).items()}
        else:
            shapes = {k: tuple(v.shape) for k, v in read_state_dict(path).items()}
        _SHAPES[key] = shapes
    return shapes


def file_identity(path: str | os.PathLike[str]) -> str:
    """The real path and version of a file: model manager keys change when the file is replaced."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}@{st.st_mtime_ns}:{st.st_size}"


def part_reader(path: str, prefix: str, dtype: Callable[[], torch.dtype | None],
                rename: Callable[[str], str | None] | None = None,
                convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                ) -> Callable[[str], dict[str, torch.Tensor]]:
    """``read(device)`` for the tensors under ``prefix`` (prefix removed, floats in ``dtype()``).

    ``rename`` maps each stripped key to the network's name (None drops it);
    ``convert`` rewrites the whole dict (for layouts that split or transpose tensors).
    """

    def read(device: str) -> dict[str, torch.Tensor]:
        target = dtype()
        if is_safetensors(path):
            from comfy_kernel.gpu.loading import load_state_dict

            sd = load_state_dict(path, device, prefix=prefix, dtype=target)
        else:
            sd = {}
            for key, tensor in read_state_dict(path).items():
                if key.startswith(prefix):
                    if target is not None and tensor.is_floating_point():
                        tensor = tensor.to(target)
                    sd[key[len(prefix):]] = tensor.to(device)
        if rename is not None:
            renamed = {}
            for key, tensor in sd.items():
                new = rename(key)
                if new is not None:
                    renamed[new] = tensor
            sd = renamed
        if convert is not None:
            sd = convert(sd)
        return sd

    return read


def part_size(path: str, prefix: str, dtype: torch.dtype | None) -> int | None:
    """Bytes the part takes once loaded (known from the header for .safetensors; else None)."""
    if not is_safetensors(path):
        return None
    from comfy_kernel.gpu.loading import weights_size

    return weights_size(path, prefix, None if dtype is None else dtype.itemsize)


def load_module(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Assign ``sd``'s tensors to a module built on the meta device (no copies); missing weights are an error."""
    missing, _unexpected = module.load_state_dict(sd, strict=False, assign=True)
    if missing:
        raise ValueError(f"{what}: {len(missing)} weights missing from the file, e.g. {missing[:3]}")
    return module.eval().requires_grad_(False)


def combined_reader(parts: list[tuple[Callable[[str], dict[str, torch.Tensor]], str]]
                    ) -> Callable[[str], dict[str, torch.Tensor]]:
    """``read(device)`` merging several part readers, each one's keys under its own prefix."""

    def read(device: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for reader, prefix in parts:
            out.update({prefix + k: v for k, v in reader(device).items()})
        return out

    return read
