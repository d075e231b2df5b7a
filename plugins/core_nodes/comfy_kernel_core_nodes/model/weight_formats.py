"""Which dtype a diffusion transformer is stored and computed in, and files shipped as (scaled) fp8.

Files come in fp32/bf16/fp16, in fp8 (``fp8_e4m3fn``: the weights cast to
float8), or in "scaled fp8" (``fp8_e4m3fn_scaled``: each linear layer's
weight stored as ``weight / scale`` in float8 beside a ``scale_weight``
scalar, with a ``scaled_fp8`` marker tensor). An fp8 file keeps its fp8
storage (a 12 B transformer stays 12 GB); each layer is cast to the compute
dtype when it runs, with its ``scale_weight`` multiplied in (model/ops.py),
on every device, the CPU included. "Mixed" files (``*_fp8mixed``: some layers
fp8 with a ``weight_scale`` and a ``comfy_quant`` entry, the others bf16) keep
each layer as stored; so do the NVFP4 and int8 layers of ComfyUI's mixed
files for diffusion transformers (decoded per layer, model/quant_layouts.py),
while readers of text encoders get those layers dequantized to their dtype.
Other quantized formats are refused by name (model/quant.py). Where weights are stored in a float
dtype instead (UNETLoader's "default" on an fp8 file for a part that is not
kept in fp8, text encoders), scaled weights are multiplied out as they are read.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import torch

from .ops import FP8

SCALE_KEYS = (".scale_weight", ".scale_input")
#: ComfyUI's per-layer quantization metadata ("fp8mixed" files): the layer's format, its input scale
MIXED_DROPPED = (".comfy_quant", ".input_scale")
#: the scales of mixed files' fp8 / NVFP4 / int8 layers (and AWQ's input scale)
PACKED_SCALES = (".weight_scale", ".weight_scale_2", ".pre_quant_scale")

_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
if hasattr(torch, "float8_e4m3fn"):
    _SAFETENSORS_DTYPES["F8_E4M3"] = torch.float8_e4m3fn
if hasattr(torch, "float8_e5m2"):
    _SAFETENSORS_DTYPES["F8_E5M2"] = torch.float8_e5m2


def file_weight_dtype(path: str | os.PathLike[str], prefix: str = "") -> torch.dtype | None:
    """The dtype most of the 2-d+ float weights under ``prefix`` are stored in (None if unknown)."""
    from .files import is_safetensors

    if not is_safetensors(path):
        return None
    from comfy_kernel.gpu.loading import read_header

    counts: Counter[str] = Counter()
    for key, info in read_header(path).items():
        if key.startswith(prefix) and len(info["shape"]) >= 2:
            counts[info["dtype"]] += 1
    if not counts:
        return None
    return _SAFETENSORS_DTYPES.get(counts.most_common(1)[0][0])


def is_scaled_fp8(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> bool:
    return prefix + "scaled_fp8" in shapes or any(k.startswith(prefix) and k.endswith(".scale_weight")
                                                     for k in shapes)


def dit_dtypes(path: str, prefix: str, weight_dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """(storage(), compute()) dtype callables for a diffusion transformer that prefers bf16.

    UNETLoader's ``weight_dtype`` wins; an fp8 file stays fp8; otherwise bf16 on devices
    that compute it at full speed, else the device's policy for the UNet. fp8 storage
    computes in bf16 / fp16 on GPUs and fp32 on the CPU.
    """
    from .quant import inspect

    inspect(path, prefix)  # refuses int8 / fp4 files by name
    stored = weight_dtype if weight_dtype is not None else file_weight_dtype(path, prefix)

    def _bf16() -> bool:
        from comfy_kernel import gpu

        device = gpu.current_device()
        policy = gpu.dtype_policy(device, gpu.model_manager().config)
        return device.type != "cpu" and policy.unet.storage != "float32" and _supports_bf16(device)

    def storage() -> torch.dtype:
        from .devices import storage_dtype

        if stored is not None and stored in FP8:
            return stored
        return torch.bfloat16 if _bf16() else storage_dtype("unet")

    def compute() -> torch.dtype:
        from .devices import compute_dtype

        if _bf16():
            return torch.bfloat16
        return compute_dtype("unet")

    return storage, compute


def _supports_bf16(device: Any) -> bool:
    from comfy_kernel.gpu.dtypes import supports_bf16

    try:
        return supports_bf16(device)
    except Exception:  # a device torch cannot query
        return False


def strip_scales(sd: dict[str, torch.Tensor], storage: torch.dtype) -> dict[str, torch.Tensor]:
    """Scaled fp8 read into a float ``storage`` dtype: multiply each scale in, drop the scale tensors.

    With fp8 storage the scales stay (:func:`attach_scales` gives them to the layers).
    """
    sd.pop("scaled_fp8", None)
    if storage in FP8:
        return sd
    for key in [k for k in sd if k.endswith(SCALE_KEYS)]:
        weight_key = key[: -len(".scale_weight")] + ".weight"
        if weight_key in sd and sd[weight_key].dtype in (torch.int8, torch.uint8):
            continue  # a packed layer's scale: its casting layer applies it
        scale = sd.pop(key)
        if key.endswith(".scale_weight"):
            if weight_key in sd:
                sd[weight_key] = (sd[weight_key].float() * scale.float().to(sd[weight_key].device)).to(storage)
    return sd


def has_packed(sd: dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` keeps NVFP4 / int8 layers packed (the network must use the casting layers)."""
    return any(k.endswith(".weight") and v.dtype in (torch.int8, torch.uint8) for k, v in sd.items())


def attach_scales(module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Register each ``<layer>.scale_weight`` of ``sd`` as that layer's buffer (the casting layers use it)."""
    for key, value in sd.items():
        if not key.endswith(".scale_weight"):
            continue
        owner_path = key[: -len(".scale_weight")]
        try:
            owner = module.get_submodule(owner_path)
        except AttributeError:
            continue
        owner.register_buffer("scale_weight", value.float().reshape(()) if value.numel() == 1 else value.float())
    return module


def scaled_reader(path: str, prefix: str, storage: Any, rename: Any = None, compute: Any = None,
                  packed: bool = False) -> Any:
    """``read(device)`` of the tensors under ``prefix``: weights in ``storage()``, scales kept in float32.

    Scaled fp8 weights are multiplied out unless the storage is fp8 (see :func:`strip_scales`);
    with fp8 storage only matrices and kernels become fp8: biases and norm scales keep the
    file's float dtype (``compute()`` if the file has them in fp8 too). ``rename`` maps each
    stripped key to the network's name (None drops it). NVFP4 / int8 layers of mixed files stay
    packed with ``packed`` (the network is built from the casting layers and
    :func:`comfy_kernel_core_nodes.model.quant_layouts.prepare` ran), else they are dequantized.
    """
    from .files import is_safetensors, read_state_dict, renamed
    from .quant import dequantize_packed, split_packed

    def read(device: str) -> dict[str, torch.Tensor]:
        target = storage()
        source = renamed(path)
        if source is not None:
            raw = source.read(device, prefix)
        elif is_safetensors(path):
            from comfy_kernel.gpu.loading import load_state_dict

            raw = load_state_dict(path, device, prefix=prefix)
        else:
            raw = {k[len(prefix):]: v.to(device) for k, v in read_state_dict(path).items() if k.startswith(prefix)}
        mixed = any(k.endswith(".comfy_quant") for k in raw)
        layers, raw = split_packed(raw)
        if not packed:
            layers = dequantize_packed(layers, target if target not in FP8 else torch.float32)
        sd: dict[str, torch.Tensor] = {}
        for key, tensor in layers.items():
            base, _, suffix = key.rpartition(".")
            name = rename(f"{base}.weight") if rename is not None else f"{base}.weight"
            if name is not None:
                sd[f"{name[: -len('.weight')]}.{suffix}"] = tensor
        for key, tensor in raw.items():
            name = rename(key) if rename is not None else key
            if name is None or name.endswith(MIXED_DROPPED):
                continue
            if name.endswith(".weight_scale"):
                name = name[: -len(".weight_scale")] + ".scale_weight"
            if name.endswith(SCALE_KEYS) or name == "scaled_fp8":
                sd[name] = tensor.float() if name != "scaled_fp8" else tensor
            elif target in FP8 and mixed and tensor.is_floating_point() and tensor.dtype not in FP8:
                sd[name] = tensor  # a layer the mixed file keeps in higher precision stays so
            elif target in FP8 and tensor.ndim < 2 and tensor.is_floating_point():
                sd[name] = tensor.to(compute() if compute is not None else torch.float32) \
                    if tensor.dtype in FP8 else tensor
            elif tensor.is_floating_point() and tensor.dtype != target:
                sd[name] = tensor.to(target)
            else:
                sd[name] = tensor
        return strip_scales(sd, target)

    return read


def network_keys(shapes: dict[str, tuple[int, ...]], prefix: str, rename: Any = None) -> frozenset[str]:
    """The keys a network sees from the tensors under ``prefix`` (scale tensors and markers excluded)."""
    out = set()
    for key in shapes:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        name = rename(name) if rename is not None else name
        if name is None or name == "scaled_fp8" or name.endswith(SCALE_KEYS + MIXED_DROPPED + PACKED_SCALES):
            continue
        out.add(name)
    return frozenset(out)
