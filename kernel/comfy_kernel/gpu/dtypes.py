"""Which dtype each model part is stored and computed in, per device.

Storage dtype decides memory use; compute dtype is what the layers run in
(weights are cast per operation when the two differ, as ComfyUI does for
fp16-stored text encoders on the CPU, where half-precision matmuls are slow
or missing). Dtypes are named by strings ("float16") so the policy can be
worked out and shown without importing torch; :func:`torch_dtype` converts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import PARTS, GpuConfig
from .devices import DeviceInfo, parse_device

_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class PartDtype:
    """Storage and compute dtype of one model part."""

    storage: str
    compute: str

    @property
    def manual_cast(self) -> bool:
        """True when weights must be cast to ``compute`` at each use."""
        return self.storage != self.compute


@dataclass(frozen=True)
class DtypePolicy:
    """The dtype of every model part on one device."""

    unet: PartDtype
    text_encoder: PartDtype
    vae: PartDtype

    def part(self, name: str) -> PartDtype:
        if name not in PARTS:
            raise KeyError(f"unknown model part {name!r}; expected one of {PARTS}")
        return getattr(self, name)


def supports_bf16(device: DeviceInfo | str) -> bool:
    """Whether ``device`` computes bf16 at full speed (CUDA compute capability 8.0+ / Ampere)."""
    dev = parse_device(device)
    if dev.type != "cuda":
        return False
    import torch

    major, _ = torch.cuda.get_device_capability(dev.index)
    return major >= 8


def supports_fp16(device: DeviceInfo | str) -> bool:
    """Whether fp16 compute is worthwhile on ``device`` (not on the CPU; CUDA from Pascal on)."""
    dev = parse_device(device)
    if dev.type == "cpu":
        return False
    if dev.type != "cuda":
        return True
    import torch

    major, _ = torch.cuda.get_device_capability(dev.index)
    return major >= 6


def _auto(part: str, device: DeviceInfo, fp16: bool, bf16: bool) -> str:
    if device.type == "cpu":
        return "fp16" if part == "text_encoder" else "fp32"
    if part == "vae":
        return "bf16" if bf16 else "fp32"
    return "fp16" if fp16 else "fp32"


def dtype_policy(device: DeviceInfo | str, config: GpuConfig | None = None, *,
                 fp16: bool | None = None, bf16: bool | None = None) -> DtypePolicy:
    """The dtype policy for ``device`` under ``config``'s flags.

    Precedence: a per-part flag (--bf16-unet) > --force-fp32 / --force-fp16 >
    the device default. Defaults: CPU stores the UNet and VAE in fp32 and the
    text encoder in fp16 (computed in fp32); GPUs use fp16 for UNet and text
    encoder, and bf16 for the VAE where supported, else fp32 (fp16 VAEs
    overflow). ``fp16`` / ``bf16`` override hardware detection (for tests).
    """
    config = config or GpuConfig()
    dev = parse_device(device)
    fp16 = supports_fp16(dev) if fp16 is None else fp16
    bf16 = supports_bf16(dev) if bf16 is None else bf16
    parts: dict[str, PartDtype] = {}
    for part in PARTS:
        storage = config.part_dtype(part)
        if storage is None and config.force_precision is not None:
            if config.force_precision == "fp32" or part != "vae":
                storage = config.force_precision
        if storage is None:
            storage = _auto(part, dev, fp16, bf16)
        compute = storage
        if dev.type == "cpu" and storage == "fp16":
            compute = "fp32"
        parts[part] = PartDtype(_NAMES[storage], _NAMES[compute])
    return DtypePolicy(**parts)


def torch_dtype(name: str) -> Any:
    """The torch dtype for a policy name ("float16" -> torch.float16)."""
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return dtype
