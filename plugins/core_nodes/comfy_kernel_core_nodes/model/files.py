"""Weights files: their tensor table without reading the data, their tensors, and how to read one part.

``.safetensors`` files are memory-mapped (nothing is copied until a tensor is
used, and a GPU load copies straight from the page cache); ``.ckpt``/``.pt``/
``.pth``/``.bin`` go through ``torch.load(weights_only=True)``, which never
runs pickled code. A folder saved by diffusers or transformers (one weights
file or shards) counts as one file here, and a file (or folder) saved under
another library's names for a network this package knows (diffusers' UNet and
VAE) is read under this package's names (see :mod:`.folders`); ``raw_*`` read
a file as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SAFETENSORS = (".safetensors", ".sft")


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(SAFETENSORS)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a weights file (or weights folder), on the CPU, under this package's names."""
    source = renamed(path)
    if source is not None:
        return source.read("cpu")
    return raw_state_dict(path)


def raw_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of one weights file, on the CPU, under the names the file gives them."""
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


def renamed(path: str | os.PathLike[str]) -> Any:
    """A weights folder, or a file saved under another library's names, read under ours
    (a :class:`.folders.WeightsFolder`), else None."""
    from .folders import renamed_source

    return renamed_source(path)


_SHAPES: dict[tuple[str, int, int], dict[str, tuple[int, ...]]] = {}


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor under this package's names (see :mod:`.folders`)."""
    source = renamed(path)
    if source is not None:
        return dict(source.shapes)
    return raw_tensor_shapes(path)


def raw_tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor of one file as named there (from the header for .safetensors; cached per
    file version)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    shapes = _SHAPES.get(key)
    if shapes is None:
        if is_safetensors(path):
            from comfy_kernel.gpu.loading import read_header

            shapes = {k: tuple(v["shape"]) for k, v in read_header(path).items()}
        else:
            shapes = {k: tuple(v.shape) for k, v in raw_state_dict(path).items()}
        _SHAPES[key] = shapes
    return shapes


def file_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """A safetensors file's header metadata (``__metadata__``); empty for other files and folders."""
    if os.path.isdir(path) or not is_safetensors(path):
        return {}
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata() or {})


def file_identity(path: str | os.PathLike[str]) -> str:
    """The real path and version of a file: model manager keys change when the file is replaced."""
    if os.path.isdir(path):
        from .folders import weights_folder

        return weights_folder(path).identity()
    return single_file_identity(path)


def single_file_identity(path: str | os.PathLike[str]) -> str:
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
        source = renamed(path)
        if source is not None:
            sd = source.read(device, prefix, target)
        elif is_safetensors(path):
            from comfy_kernel.gpu.loading import load_state_dict

            sd = load_state_dict(path, device, prefix=prefix, dtype=target)
        else:
            sd = {}
            for key, tensor in raw_state_dict(path).items():
                if key.startswith(prefix):
                    if target is not None and tensor.is_floating_point():
                        tensor = tensor.to(target)
                    sd[key[len(prefix):]] = tensor.to(device)
        if rename is not None:
            named = {}
            for key, tensor in sd.items():
                new = rename(key)
                if new is not None:
                    named[new] = tensor
            sd = named
        if convert is not None:
            sd = convert(sd)
        return sd

    return read


def part_size(path: str, prefix: str, dtype: torch.dtype | None) -> int | None:
    """Bytes the part takes once loaded (known from the header for .safetensors; else None)."""
    source = renamed(path)
    if source is not None:
        return source.size(prefix, dtype)
    if not is_safetensors(path):
        return None
    from comfy_kernel.gpu.loading import weights_size

    return weights_size(path, prefix, None if dtype is None else dtype.itemsize)


def read_tensor(path: str, key: str) -> torch.Tensor:
    """One tensor of a weights file or folder (read alone from .safetensors files)."""
    source = renamed(path)
    if source is not None:
        return source.read("cpu", key)[""]
    if is_safetensors(path):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return f.get_tensor(key)
    return raw_state_dict(path)[key]


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
