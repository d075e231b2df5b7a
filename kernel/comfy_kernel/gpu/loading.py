"""Reading weights from .safetensors files without an extra copy.

safetensors memory-maps the file: on the CPU the returned tensors are views of
the page cache (no private copy until written), and on a GPU they are copied
from the mapping straight into device memory. The header is read separately
so the memory manager can budget a model before loading a single byte.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import Any

#: Bytes per element of each safetensors dtype code.
ELEMENT_SIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def read_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The tensor table of a .safetensors file: {key: {"dtype", "shape", "data_offsets"}}."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def weights_size(path: str | os.PathLike[str], prefix: str = "", dtype_size: int | None = None) -> int:
    """Bytes the tensors under ``prefix`` take once loaded (floats re-sized to ``dtype_size`` if given)."""
    total = 0
    for key, info in read_header(path).items():
        if not key.startswith(prefix):
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        size = ELEMENT_SIZE.get(info["dtype"], 4)
        if dtype_size is not None and info["dtype"] in _FLOATS:
            size = dtype_size
        total += count * size
    return total


def load_state_dict(path: str | os.PathLike[str], device: str = "cpu", *, prefix: str = "",
                    strip_prefix: bool = True, dtype: Any = None) -> dict[str, Any]:
    """Tensors under ``prefix`` from a .safetensors file, memory-mapped, on ``device``.

    Floating-point tensors are converted to ``dtype`` when given (that makes
    one copy, which is the converted result itself).
    """
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
        for key in f.keys():
            if not key.startswith(prefix):
                continue
            tensor = f.get_tensor(key)
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            out[key[len(prefix):] if strip_prefix else key] = tensor
    return out


def file_loader(path: str | os.PathLike[str], build: Callable[[dict[str, Any]], Any], *,
                prefix: str = "", dtype: Any = None) -> Callable[[str], Any]:
    """A loader for :meth:`ModelManager.register`: reads the file onto the requested device and builds the model.

    ``build`` receives the state dict (keys with ``prefix`` removed) and
    returns the module; it should assign the tensors (``load_state_dict(...,
    assign=True)``) rather than copy them, to keep the single-copy property.
    """

    def load(device: str) -> Any:
        return build(load_state_dict(path, device, prefix=prefix, dtype=dtype))

    return load


def weights_module(state_dict: dict[str, Any]) -> Any:
    """Wrap a state dict in a module (tensors as buffers) so the manager can place it.

    For parts used as raw tensors (a UNet the sampler drives functionally,
    benchmarks, tests). The tensors are assigned, not copied; ``tensors()``
    gives them back by their original names.
    """
    import torch

    class Weights(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._names: dict[str, str] = {}
            for i, (key, tensor) in enumerate(state_dict.items()):
                slot = f"t{i}"
                self._names[key] = slot
                self.register_buffer(slot, tensor)

        def tensors(self) -> dict[str, Any]:
            return {key: getattr(self, slot) for key, slot in self._names.items()}

    return Weights()
