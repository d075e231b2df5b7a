"""Networks from weights files that may be quantized: fp8, "scaled fp8" and ComfyUI's mixed files (fp8, int8, fp4).

Files as the model hubs ship them come in these flavours, all handled here
without ever upcasting the whole model:

* plain fp8 (``*_fp8_e4m3fn.safetensors``): Linear/Conv weights stored in
  ``float8_e4m3fn`` or ``float8_e5m2``;
* "scaled fp8" (``*_fp8_scaled``): fp8 weights with a per-layer
  ``<layer>.scale_weight`` and a ``scaled_fp8`` marker tensor;
* "mixed" (``*_fp8mixed``, ``*_fp4_mixed``, ``*_int8_convrot``, ComfyUI's
  per-layer quantization metadata): each quantized layer has a
  ``<layer>.comfy_quant`` JSON tensor naming its format (``float8_e4m3fn``,
  ``float8_e5m2``, ``nvfp4``, ``int8_tensorwise``) and its scales
  (``weight_scale``, for NVFP4 also ``weight_scale_2``); the other layers are
  bf16. NVFP4 and int8 layers are decoded by model/quant_layouts.py.

fp8 weights stay fp8 in memory; the casting layers of model/ops.py convert
each one to the compute dtype when its layer runs (multiplying in the scale),
so a device with fp8 support keeps the file's footprint and the CPU computes
in fp32 layer by layer; NVFP4 and int8 weights likewise stay packed and are
decoded to the compute dtype per layer on every device (no fp4 / int8 matrix
multiplication kernels are used). Input scales (``scale_input``/``input_scale``)
only matter to quantized matrix multiplication kernels and are not used. Other
formats of ComfyUI's list (``mxfp8``, ``convrot_w4a4``, ``asym_w4a8_int8``,
``awq_w4a16``, ...) and int8 weights without ``comfy_quant`` are refused with
an error naming them.

``UNETLoader``'s ``weight_dtype`` (fp8_e4m3fn / fp8_e5m2) stores a higher
precision file's Linear/Conv weights in fp8 the same way (norms, biases and
embeddings keep the compute dtype).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .base import WeightsSource
from .files import file_identity, is_safetensors, load_module, part_reader

FP8_CODES = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
SCALE_SUFFIXES = (".scale_weight", ".weight_scale", ".weight_scale_2", ".pre_quant_scale")
DROPPED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
MARKERS = ("scaled_fp8",)
#: ComfyUI's per-layer format names this server computes with.
SUPPORTED_FORMATS = ("float8_e4m3fn", "float8_e5m2", "nvfp4", "int8_tensorwise")


class UnsupportedQuantization(ValueError):
    """The file stores weights in a quantized format this server cannot compute with."""


@dataclass(frozen=True)
class QuantInfo:
    """What a part of a file holds: its fp8 dtype (if any), whether layers carry scales, whether some are packed."""

    fp8: torch.dtype | None = None
    scaled: bool = False
    packed: bool = False

    @property
    def quantized(self) -> bool:
        return self.fp8 is not None or self.packed


def _header(path: str) -> dict[str, dict[str, Any]]:
    from comfy_kernel.gpu.loading import read_header

    return read_header(path)


def inspect(path: str, prefix: str = "") -> QuantInfo:
    """The quantization of the tensors under ``prefix`` (from the header, plus any ``comfy_quant`` entries)."""
    if not is_safetensors(path):
        return QuantInfo()
    header = {k: v for k, v in _header(path).items() if k.startswith(prefix)}
    fp8 = None
    unsupported = set()
    marked = {k[: -len(".comfy_quant")] + ".weight" for k in header if k.endswith(".comfy_quant")}
    packed = False
    for key, info in header.items():
        code = info.get("dtype")
        if code in FP8_CODES and key.endswith(".weight"):
            fp8 = getattr(torch, FP8_CODES[code])
        elif code in ("I8", "U8") and key.endswith(".weight"):
            if key in marked:
                packed = True
            else:
                unsupported.add(f"8-bit integer weights without comfy_quant metadata ({key})")
    quant_keys = [k for k in header if k.endswith(".comfy_quant")]
    if quant_keys:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            for key in quant_keys:
                problem = _unsupported_layer(layer_config(f.get_tensor(key)))
                if problem:
                    unsupported.add(problem)
    if unsupported:
        raise UnsupportedQuantization(
            f"{os.path.basename(path)}: quantized with {', '.join(sorted(unsupported))}; supported are fp8 "
            "(e4m3fn, e5m2), scaled fp8, ComfyUI's mixed files with float8, nvfp4 and int8_tensorwise layers "
            "(convrot included), and unquantized fp32/fp16/bf16 files")
    scaled = any(k.endswith(SCALE_SUFFIXES) for k in header)
    return QuantInfo(fp8=fp8, scaled=scaled, packed=packed)


def layer_config(raw: torch.Tensor) -> dict[str, Any]:
    """A ``comfy_quant`` tensor's JSON (UTF-8 bytes in a uint8 tensor); ``{"format": "unreadable"}`` if broken."""
    try:
        config = json.loads(bytes(raw.to(torch.uint8).tolist()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {"format": "unreadable"}
    return config if isinstance(config, dict) else {"format": "unreadable"}


def convrot_group(config: dict[str, Any]) -> int | None:
    """An int8 layer's rotation group (``convrot`` at the top level or under ``params``), None if not rotated."""
    params = config.get("params") if isinstance(config.get("params"), dict) else {}
    if not config.get("convrot", params.get("convrot", False)):
        return None
    return int(config.get("convrot_groupsize", params.get("convrot_groupsize", 256)))


def _unsupported_layer(config: dict[str, Any]) -> str | None:
    fmt = str(config.get("format"))
    if fmt not in SUPPORTED_FORMATS:
        return f"'{fmt}' layers"
    if fmt == "int8_tensorwise":
        try:
            group = convrot_group(config)
        except (TypeError, ValueError):
            return "'int8_tensorwise' layers with an unreadable convrot_groupsize"
        if group is not None and (group < 4 or 4 ** round(math.log(group, 4)) != group):
            return f"'int8_tensorwise' convrot layers with group size {group} (not a power of 4)"
    return None


def convert(sd: dict[str, torch.Tensor], default: torch.dtype, weight_dtype: torch.dtype | None = None
            ) -> dict[str, torch.Tensor]:
    """The state dict the network loads: fp8 kept, scales renamed ``scale_weight``, markers dropped.

    Other floating tensors go to ``default``; with ``weight_dtype`` (an fp8
    dtype), the 2-d-and-up ``.weight`` tensors of unquantized layers go to it.
    """
    out, sd = split_packed(sd)
    for key, tensor in sd.items():
        if key in MARKERS or key.endswith(DROPPED_SUFFIXES) or key.rsplit(".", 1)[-1] in MARKERS:
            continue
        if key.endswith(SCALE_SUFFIXES):
            suffix = next(s for s in SCALE_SUFFIXES if key.endswith(s))
            out[key[: -len(suffix)] + ".scale_weight"] = tensor.float()
        else:
            if not tensor.is_floating_point() or tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
                out[key] = tensor
            elif weight_dtype is not None and key.endswith(".weight") and tensor.ndim >= 2:
                out[key] = tensor.to(weight_dtype)
            else:
                out[key] = tensor.to(default)
    return out


PACKED_FORMATS = ("nvfp4", "int8_tensorwise")


def split_packed(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the NVFP4 / int8 layers' tensors as the casting layers hold them, the rest of ``sd``).

    A packed layer keeps its ``weight`` as stored and gets ``block_scale``
    (NVFP4's tiled fp8 ``weight_scale``), ``scale_weight`` (NVFP4's
    ``weight_scale_2``, int8's ``weight_scale`` as () or (rows, 1)),
    ``convrot_group`` and ``pre_quant_scale`` where the file has them.
    """
    formats = {}
    for key, tensor in sd.items():
        if key.endswith(".comfy_quant"):
            config = layer_config(tensor)
            layer = key[: -len(".comfy_quant")]
            if config.get("format") in PACKED_FORMATS and f"{layer}.weight" in sd:
                formats[layer] = config
    if not formats:
        return {}, sd
    packed: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        layer, _, name = key.rpartition(".")
        config = formats.get(layer)
        if config is None:
            rest[key] = tensor
        elif name == "weight":
            packed[key] = tensor
        elif name == "pre_quant_scale":
            packed[key] = tensor.float()
        elif config["format"] == "nvfp4" and name == "weight_scale":
            packed[f"{layer}.block_scale"] = tensor.view(torch.float8_e4m3fn)
        elif config["format"] == "nvfp4" and name == "weight_scale_2":
            packed[f"{layer}.scale_weight"] = tensor.float().reshape(())
        elif name == "weight_scale":
            rows = sd[f"{layer}.weight"].shape[0]
            scale = tensor.float()
            packed[f"{layer}.scale_weight"] = scale.reshape(rows, 1) if scale.numel() == rows > 1 else scale
            group = convrot_group(config)
            if group is not None:
                packed[f"{layer}.convrot_group"] = torch.tensor(group, dtype=torch.int64)
        elif name not in ("comfy_quant", "input_scale"):
            rest[key] = tensor
    return packed, rest


def dequantize_packed(packed: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """:func:`split_packed`'s layers as plain ``dtype`` weights (for readers whose networks are not built
    from the casting layers), input scales folded in; an NVFP4 weight keeps its padded (multiple of 16) shape."""
    from . import ops

    out = {}
    like = torch.empty((), dtype=torch.float32)
    for key, weight in packed.items():
        if not key.endswith(".weight"):
            continue
        layer = torch.nn.Module()
        layer.weight = torch.nn.Parameter(weight, requires_grad=False)
        base = key[: -len(".weight")]
        for name in ("block_scale", "scale_weight", "convrot_group"):
            if f"{base}.{name}" in packed:
                layer.register_buffer(name, packed[f"{base}.{name}"])
        layer.quant_shape = (weight.shape[0], weight.shape[1] * 2)
        value = ops.cast_weight(layer, "weight", like.to(weight.device))
        pre = packed.get(f"{base}.pre_quant_scale")
        if pre is not None:  # x * s @ W.T == x @ (W * s).T
            value = value * pre.float().reshape(1, -1).to(value.device)
        out[key] = value.to(dtype)
    return out


def prepare_scales(module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Give each layer that has a scale in ``sd`` a ``scale_weight`` buffer to receive it."""
    from . import quant_layouts

    for key, tensor in sd.items():
        if key.endswith(".scale_weight"):
            layer = module.get_submodule(key[: -len(".scale_weight")])
            layer.register_buffer("scale_weight", torch.empty(tensor.shape, device="meta"))
    quant_layouts.prepare(module, sd)


def supported_compute(compute: torch.dtype, supported: tuple[torch.dtype, ...] | None) -> torch.dtype:
    """``compute`` if the family computes well in it, else bf16 where the device has it, else fp32.

    Some families overflow in fp16 (Qwen-Image, Z-Image, Lumina 2: ComfyUI's
    ``supported_inference_dtypes`` leave fp16 out), so fp16 is replaced.
    """
    if supported is None or compute in supported:
        return compute
    if torch.bfloat16 in supported:
        from comfy_kernel import gpu
        from comfy_kernel.gpu.dtypes import supports_bf16

        if compute != torch.float32 and supports_bf16(gpu.current_device()):
            return torch.bfloat16
    return torch.float32


def network_weights(path: str, prefix: str, shapes: dict[str, tuple[int, ...]], name: str, part: str,
                    make: Callable[[Any, torch.dtype | None], torch.nn.Module], *,
                    weight_dtype: torch.dtype | None = None, supported: tuple[torch.dtype, ...] | None = None,
                    rename: Callable[[str], str | None] | None = None,
                    fix: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                    ) -> WeightsSource:
    """A :class:`WeightsSource` for the network ``make(ops, compute_dtype)`` stored under ``prefix``.

    ``part`` ("unet", "text_encoder", "vae") picks the device's dtype policy;
    fp8 files and ``weight_dtype`` keep fp8 weights (see the module docstring).
    ``rename`` maps file keys to the network's, ``fix`` rewrites the dict after.
    """
    from . import ops
    from .devices import compute_dtype, storage_dtype

    info = inspect(path, prefix)
    fp8 = weight_dtype if weight_dtype in ops.FP8 else info.fp8

    def compute() -> torch.dtype:
        return supported_compute(compute_dtype(part), supported)

    def storage() -> torch.dtype:
        default = storage_dtype(part)
        return default if supported is None or default in supported else compute()

    def dtype() -> torch.dtype:
        return fp8 or storage()

    raw = part_reader(path, prefix, lambda: None, rename)

    def read(device: str) -> dict[str, torch.Tensor]:
        sd = convert(raw(device), storage(), fp8 if weight_dtype is not None else None)
        return fix(sd) if fix is not None else sd

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        operations = ops.manual_cast if info.packed else ops.pick_operations(dtype(), compute())
        with torch.device("meta"):
            module = make(operations, compute() if operations.cast else None)
        prepare_scales(module, sd)
        module = load_module(module, sd, name)
        return ops.set_compute_dtype(module, compute()) if operations.cast else module

    local = {k[len(prefix):] for k in shapes if k.startswith(prefix)}
    if rename is not None:
        local = {n for n in (rename(k) for k in local) if n is not None}
    keys = frozenset(k for k in local if not (k in MARKERS or k.endswith(DROPPED_SUFFIXES)
                                              or k.endswith(SCALE_SUFFIXES)))
    tag = "" if weight_dtype is None else f"@{weight_dtype}"
    size = _size(path, prefix, fp8)
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#{name}{tag}", read=read, build=build, keys=keys,
                         size=size, dtype=dtype, compute=compute)


def _size(path: str, prefix: str, fp8: torch.dtype | None) -> int | None:
    """Bytes once loaded: fp8 weights at one byte, other floats at the storage width (4 on the CPU)."""
    if not is_safetensors(path):
        return None
    from comfy_kernel.gpu.loading import ELEMENT_SIZE

    total = 0
    for key, info in _header(path).items():
        if not key.startswith(prefix):
            continue
        count = 1
        for d in info["shape"]:
            count *= d
        code = info["dtype"]
        if code in FP8_CODES or (fp8 is not None and key.endswith(".weight") and len(info["shape"]) >= 2):
            size = 1
        elif code in ("F32", "F16", "BF16", "F64"):
            size = 4
        else:
            size = ELEMENT_SIZE.get(code, 4)
        total += count * size
    return total
