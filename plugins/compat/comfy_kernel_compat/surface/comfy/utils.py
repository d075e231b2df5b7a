"""ComfyUI's ``comfy.utils``: progress bars, weight files and image resizing.

``ProgressBar`` is the kernel's own (per-prompt progress, interrupt
checkpoint, ``progress``/``progress_state`` messages). The global hook is
kept in :mod:`comfy_kernel.progress`, so ``set_progress_bar_global_hook``
changes what every later ProgressBar calls, as in ComfyUI. Resizing is the
kernel's (:mod:`comfy_kernel.nodes.resize`), the one core_nodes uses; the
other tensor helpers are written here on plain PyTorch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from comfy_kernel import progress as _progress
from comfy_kernel.nodes.resize import bislerp, common_upscale, lanczos
from comfy_kernel.progress import ProgressBar, set_progress_bar_enabled, set_progress_bar_global_hook

log = logging.getLogger("comfy.utils")


def __getattr__(name: str) -> Any:
    # Read through so that set_progress_bar_enabled/global_hook are reflected.
    if name == "PROGRESS_BAR_ENABLED":
        return _progress.PROGRESS_BAR_ENABLED
    if name == "PROGRESS_BAR_HOOK":
        return _progress.PROGRESS_BAR_HOOK
    raise AttributeError(f"module 'comfy.utils' has no attribute {name!r}")


# --- weight files ----------------------------------------------------------------------------


def load_torch_file(ckpt: str, safe_load: bool = False, device: Any = None, return_metadata: bool = False) -> Any:
    """A state dict from ``.safetensors``/``.sft`` (memory-mapped) or a torch pickle.

    Pickles are always read with ``weights_only=True``: a model file from the
    internet must not be able to run code.
    """
    import torch

    if device is None:
        device = torch.device("cpu")
    metadata = None
    if ckpt.lower().endswith((".safetensors", ".sft")):
        import safetensors

        with safetensors.safe_open(ckpt, framework="pt", device=str(device)) as f:
            sd = {key: f.get_tensor(key) for key in f.keys()}
            if return_metadata:
                metadata = f.metadata()
    else:
        data = torch.load(ckpt, map_location=device, weights_only=True)
        if isinstance(data, dict) and "global_step" in data:
            log.debug("global step: %s", data["global_step"])
        if isinstance(data, dict) and "state_dict" in data:
            sd = data["state_dict"]
        elif isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict) \
                and next(iter(data)) in ("model", "params_ema"):
            sd = next(iter(data.values()))
        else:
            sd = data
    return (sd, metadata) if return_metadata else sd


def save_torch_file(sd: dict[str, Any], ckpt: str, metadata: dict[str, str] | None = None) -> None:
    import safetensors.torch

    safetensors.torch.save_file(sd, ckpt, metadata=metadata)


def calculate_parameters(sd: dict[str, Any], prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix))


def weight_dtype(sd: dict[str, Any], prefix: str = "") -> Any:
    counts: dict[Any, int] = {}
    for key, value in sd.items():
        if key.startswith(prefix):
            counts[value.dtype] = counts.get(value.dtype, 0) + value.nelement()
    return max(counts, key=counts.get) if counts else None


def state_dict_key_replace(state_dict: dict[str, Any], keys_to_replace: dict[str, str]) -> dict[str, Any]:
    for old, new in keys_to_replace.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    return state_dict


def state_dict_prefix_replace(state_dict: dict[str, Any], replace_prefix: dict[str, str],
                              filter_keys: bool = False) -> dict[str, Any]:
    """Rename keys starting with each old prefix; with ``filter_keys`` return only those, renamed."""
    out: dict[str, Any] = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


# --- attributes by dotted path -------------------------------------------------------------------


def get_attr(obj: Any, attr: str) -> Any:
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    """Set ``a.b.c`` on ``obj``; returns the previous value."""
    *parents, last = attr.split(".")
    for name in parents:
        obj = getattr(obj, name)
    previous = getattr(obj, last)
    setattr(obj, last, value)
    return previous


def set_attr_param(obj: Any, attr: str, value: Any) -> Any:
    import torch

    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def copy_to_param(obj: Any, attr: str, value: Any) -> None:
    get_attr(obj, attr).data.copy_(value)


# --- batches and images -----------------------------------------------------------------------------


def repeat_to_batch_size(tensor: Any, batch_size: int, dim: int = 0) -> Any:
    """Trim or tile ``tensor`` along ``dim`` to exactly ``batch_size``."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / size)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def resize_to_batch_size(tensor: Any, batch_size: int) -> Any:
    import torch

    size = tensor.shape[0]
    if size == batch_size:
        return tensor
    if batch_size <= 1:
        return tensor[:batch_size]
    index = torch.linspace(0, size - 1, batch_size).round().long()
    return tensor[index]


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols


def tiled_scale(samples: Any, function: Callable[[Any], Any], tile_x: int = 64, tile_y: int = 64,
                overlap: int = 8, upscale_amount: float = 4, out_channels: int = 3,
                output_device: Any = "cpu", pbar: ProgressBar | None = None) -> Any:
    """Apply ``function`` (an upscaler, a VAE decode) tile by tile and blend the overlaps.

    Each tile's contribution is weighted by a mask that ramps up over the
    overlap, so seams fade instead of showing; ``pbar`` advances per tile.
    """
    import torch

    batch, _, height, width = samples.shape
    out_h, out_w = round(height * upscale_amount), round(width * upscale_amount)
    output = torch.empty((batch, out_channels, out_h, out_w), device=output_device)
    for b in range(batch):
        sample = samples[b:b + 1]
        acc = torch.zeros((1, out_channels, out_h, out_w), device=output_device)
        weight = torch.zeros((1, out_channels, out_h, out_w), device=output_device)
        step_y = max(tile_y - overlap, 1)
        step_x = max(tile_x - overlap, 1)
        ys = list(range(0, max(height - overlap, 1), step_y)) if height > tile_y else [0]
        xs = list(range(0, max(width - overlap, 1), step_x)) if width > tile_x else [0]
        for y in ys:
            for x in xs:
                y0, x0 = max(0, min(y, height - tile_y)), max(0, min(x, width - tile_x))
                tile = sample[:, :, y0:y0 + tile_y, x0:x0 + tile_x]
                result = function(tile).to(output_device)
                th, tw = result.shape[-2], result.shape[-1]
                mask = torch.ones_like(result)
                feather = round(overlap * upscale_amount)
                for i in range(min(feather, th // 2, tw // 2)):
                    ramp = (1.0 / feather) * (i + 1)
                    mask[:, :, i, :] *= ramp
                    mask[:, :, th - 1 - i, :] *= ramp
                    mask[:, :, :, i] *= ramp
                    mask[:, :, :, tw - 1 - i] *= ramp
                oy, ox = round(y0 * upscale_amount), round(x0 * upscale_amount)
                acc[:, :, oy:oy + th, ox:ox + tw] += result * mask
                weight[:, :, oy:oy + th, ox:ox + tw] += mask
                if pbar is not None:
                    pbar.update(1)
        output[b:b + 1] = acc / weight.clamp_min(1e-8)
    return output


def tiled_scale_multidim(samples: Any, function: Callable[[Any], Any], tile: tuple[int, ...] = (64, 64),
                         overlap: int = 8, upscale_amount: float = 4, out_channels: int = 3,
                         output_device: Any = "cpu", downscale: bool = False, index_formulas: Any = None,
                         pbar: ProgressBar | None = None) -> Any:
    """Two-dimensional tiles only; larger tile tuples fall back to a single call."""
    if len(tile) == 2 and not downscale:
        return tiled_scale(samples, function, tile[1], tile[0], overlap, upscale_amount, out_channels,
                           output_device, pbar)
    return function(samples).to(output_device)


# --- smaller helpers packs call -----------------------------------------------------------------

ALWAYS_SAFE_LOAD = True  # pickles are always read with weights_only=True
DISABLE_MMAP = False
MMAP_TORCH_FILES = False


def resize_list_to_batch_size(items: list[Any], batch_size: int) -> list[Any]:
    """``items`` stretched or thinned to ``batch_size`` entries, evenly spaced."""
    n = len(items)
    if n == batch_size or n == 0:
        return items
    if batch_size <= 1:
        return items[:batch_size]
    if batch_size < n:
        step = (n - 1) / (batch_size - 1)
        return [items[min(round(i * step), n - 1)] for i in range(batch_size)]
    step = n / batch_size
    return [items[min(int(i * step), n - 1)] for i in range(batch_size)]


def safetensors_header(safetensors_path: str, max_size: int = 100 * 1024 * 1024) -> bytes | None:
    """The raw JSON header of a .safetensors file (None when it claims more than ``max_size`` bytes)."""
    import struct

    with open(safetensors_path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return None if length > max_size else f.read(length)


def swap_scale_shift(weight: Any) -> Any:
    import torch

    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def pack_latents(latents: list[Any]) -> tuple[Any, list[Any]]:
    """Several latents as one ``[B, 1, N]`` tensor (flattened and concatenated) and their shapes."""
    import torch

    shapes = [t.shape for t in latents]
    return torch.cat([t.reshape(t.shape[0], 1, -1) for t in latents], dim=-1), shapes


def unpack_latents(combined: Any, latent_shapes: list[Any]) -> Any:
    """The inverse of :func:`pack_latents` (a single shape returns ``combined`` unchanged)."""
    import math

    if len(latent_shapes) <= 1:
        return combined
    out = []
    for shape in latent_shapes:
        size = math.prod(shape[1:])
        part, combined = combined[:, :, :size], combined[:, :, size:]
        out.append(part.reshape([part.shape[0], *list(shape)[1:]]))
    return out


def reshape_mask(input_mask: Any, output_shape: Any) -> Any:
    from comfy_kernel_core_nodes.sampling.guider import reshape_mask as reshape

    return reshape(input_mask, output_shape)


def unet_to_diffusers(unet_config: dict[str, Any]) -> dict[str, str]:
    """diffusers UNet key -> LDM key for an SD UNet layout (core_nodes' LoRA key map)."""
    from comfy_kernel_core_nodes.model.lora import unet_to_diffusers as mapping

    return mapping(unet_config)



# --- SD UNet key tables (LDM names <-> diffusers names), as ComfyUI's module exposes them ----------

_WB = ("weight", "bias")
UNET_MAP_ATTENTIONS = {f"{part}.{kind}" for part in ("proj_in", "proj_out", "norm") for kind in _WB}
TRANSFORMER_BLOCKS = (
    {f"norm{i}.{kind}" for i in (1, 2, 3) for kind in _WB}
    | {f"attn{a}.to_{x}.weight" for a in (1, 2) for x in "qkv"}
    | {f"attn{a}.to_out.0.{kind}" for a in (1, 2) for kind in _WB}
    | {f"ff.net.{layer}.{kind}" for layer in ("0.proj", "2") for kind in _WB}
)
UNET_MAP_RESNET = {
    f"{ldm}.{kind}": f"{diffusers}.{kind}"
    for ldm, diffusers in (("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"), ("out_layers.3", "conv2"),
                           ("skip_connection", "conv_shortcut"), ("in_layers.0", "norm1"), ("out_layers.0", "norm2"))
    for kind in _WB
}
UNET_MAP_BASIC = {
    (f"{ldm}.{kind}", f"{diffusers}.{kind}")
    for ldm, diffusers in (("label_emb.0.0", "class_embedding.linear_1"), ("label_emb.0.2", "class_embedding.linear_2"),
                           ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
                           ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out"),
                           ("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"))
    for kind in _WB
}

__all__ = ["ProgressBar", "set_progress_bar_enabled", "set_progress_bar_global_hook", "load_torch_file",
           "save_torch_file", "calculate_parameters", "weight_dtype", "state_dict_key_replace",
           "state_dict_prefix_replace", "get_attr", "set_attr", "set_attr_param", "copy_to_param",
           "repeat_to_batch_size", "resize_to_batch_size", "lanczos", "bislerp", "common_upscale",
           "get_tiled_scale_steps", "tiled_scale", "tiled_scale_multidim", "resize_list_to_batch_size",
           "safetensors_header", "swap_scale_shift", "pack_latents", "unpack_latents", "reshape_mask",
           "unet_to_diffusers", "UNET_MAP_ATTENTIONS", "TRANSFORMER_BLOCKS", "UNET_MAP_RESNET",
           "UNET_MAP_BASIC"]
