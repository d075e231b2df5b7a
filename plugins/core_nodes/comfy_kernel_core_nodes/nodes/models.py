"""The MODEL, CLIP and VAE values that flow between nodes.

They are light references, not modules: a file, the key prefix of one model
part inside it, and the LoRA patches to apply. The weights themselves belong
to the kernel's model manager (``comfy_kernel.gpu``), which loads each part
onto the worker's device on first use, keeps it while memory allows, evicts it
under pressure and drops it on ``POST /free``. A node that runs a model does so
inside ``with ref.use() as module:``, which pins it for that block.

Patched variants (LoRA) are registered under their own key, so the unpatched
base model stays valid for every other branch of a graph that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")

#: (lora file path, strength) pairs, applied in order.
Patches = tuple[tuple[str, float], ...]


def tensor_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in a weights file, without reading the tensor data where possible."""
    if path.lower().endswith((".safetensors", ".sft")):
        from comfy_kernel.gpu.loading import read_header

        return {k: tuple(v["shape"]) for k, v in read_header(path).items()}
    from ..sd.checkpoint import read_state_dict

    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


def find_prefix(shapes: dict[str, Any], candidates: tuple[str, ...], probe: str) -> str | None:
    """The first candidate prefix under which ``probe`` exists."""
    for prefix in candidates:
        if prefix + probe in shapes:
            return prefix
    return None


def read_part(path: str, device: str, prefix: str, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix`` with the prefix removed, on ``device``, floats in ``dtype``.

    .safetensors are memory-mapped; .ckpt/.pt/.pth go through ``torch.load(weights_only=True)``,
    which never runs pickled code.
    """
    if path.lower().endswith((".safetensors", ".sft")):
        from comfy_kernel.gpu.loading import load_state_dict

        return load_state_dict(path, device, prefix=prefix, dtype=dtype)
    from ..sd.checkpoint import read_state_dict

    out = {}
    for key, tensor in read_state_dict(path).items():
        if key.startswith(prefix):
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            out[key[len(prefix):]] = tensor.to(device)
    return out


def _weights_size(path: str, prefix: str, dtype: torch.dtype | None) -> int | None:
    if not path.lower().endswith((".safetensors", ".sft")):
        return None  # measured by the manager after the first load
    from comfy_kernel.gpu.loading import weights_size

    return weights_size(path, prefix, None if dtype is None else dtype.itemsize)


def _storage_dtype(part: str) -> torch.dtype:
    from comfy_kernel import gpu

    device = gpu.current_device()
    return gpu.torch_dtype(gpu.dtype_policy(device, gpu.model_manager().config).part(part).storage)


@dataclass(frozen=True)
class _Part:
    """One model part of a weights file, plus its patches."""

    path: str
    prefix: str
    patches: Patches = ()

    kind = "part"
    policy_part = "unet"

    def build(self, sd: dict[str, torch.Tensor]) -> Any:
        raise NotImplementedError

    def _key(self) -> str:
        key = f"{os.path.realpath(self.path)}#{self.prefix}#{self.kind}"
        for lora, strength in self.patches:
            key += f"+{os.path.realpath(lora)}*{strength!r}"
        return key

    def _loader(self, dtype: torch.dtype):
        def load(device: str) -> Any:
            sd = read_part(self.path, device, self.prefix, dtype)
            sd = self.prepare(sd)
            if self.patches:
                from .lora import apply_loras

                sd = apply_loras(sd, self.patches, self.kind, dtype)
            return self.build(sd)

        return load

    def prepare(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return sd

    def handle(self) -> Any:
        """The manager's handle of this part on the current worker's device (registered once)."""
        from comfy_kernel import gpu

        dtype = _storage_dtype(self.policy_part)
        manager = gpu.model_manager()
        size = _weights_size(self.path, self.prefix, dtype)
        return manager.register(self._key(), self._loader(dtype), size=size)

    @contextmanager
    def use(self) -> Iterator[Any]:
        """The loaded module, pinned on its device for the duration of the block."""
        from comfy_kernel import gpu

        with gpu.model_manager().use(self.handle()) as module:
            yield module

    def with_patch(self, lora_path: str, strength: float) -> _Part:
        return replace(self, patches=self.patches + ((lora_path, float(strength)),))


@dataclass(frozen=True)
class UNetRef(_Part):
    """MODEL: an SD1.x UNet (eps prediction, discrete schedule)."""

    model_type: str = "sd15"
    kind = "unet"
    policy_part = "unet"

    def build(self, sd: dict[str, torch.Tensor]) -> Any:
        from ..sd.checkpoint import build_unet

        tensor = next(iter(sd.values()))
        return build_unet(sd, device=tensor.device, dtype=tensor.dtype)


@dataclass(frozen=True)
class CLIPRef(_Part):
    """CLIP: the SD1 text encoder, the layer to stop at, and where embeddings live."""

    layer_idx: int | None = None
    kind = "clip"
    policy_part = "text_encoder"

    def prepare(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sd.pop("embeddings.position_ids", None)
        return sd

    def build(self, sd: dict[str, torch.Tensor]) -> Any:
        import torch

        from ..sd.checkpoint import _load_module
        from ..sd.clip_text import CLIPTextModel

        with torch.device("meta"):
            model = CLIPTextModel()
        _load_module(model, sd, "text encoder")
        return model.eval().requires_grad_(False)

    def with_layer(self, layer_idx: int | None) -> CLIPRef:
        return replace(self, layer_idx=layer_idx)


@dataclass(frozen=True)
class VAERef(_Part):
    """VAE: the SD KL autoencoder (8x downscale, 4 latent channels)."""

    kind = "vae"
    policy_part = "vae"
    downscale: int = field(default=8)

    def build(self, sd: dict[str, torch.Tensor]) -> Any:
        from ..sd.checkpoint import build_vae

        tensor = next(iter(sd.values()))
        return build_vae(sd, device=tensor.device, dtype=tensor.dtype)
