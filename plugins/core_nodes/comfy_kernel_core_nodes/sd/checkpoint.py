"""Single-file Stable Diffusion checkpoints: reading, model-type detection, splitting and building.

A checkpoint in the original LDM layout holds three models under three prefixes
(UNet, VAE, CLIP text encoder). The UNet's layout is not fixed, so it is derived
from the keys; the model family is recognised from a few tell-tale shapes. Only
SD1.x is supported so far; SD2.x and SDXL are recognised and refused explicitly
so they can be added by extending `detect_model_type` and the builders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .clip_text import CLIPTextModel

if TYPE_CHECKING:
    from .unet import UNetConfig, UNetModel
    from .vae import AutoencoderKL

StateDict = dict[str, torch.Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")


class UnsupportedCheckpoint(ValueError):
    """The file is a checkpoint, but of a model family this package cannot run yet."""


def read_state_dict(path: Path | str) -> StateDict:
    """Tensors of a .safetensors (memory-mapped) or .ckpt/.pt/.pth file (safe unpickling only)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def split_state_dict(sd: StateDict) -> tuple[StateDict, StateDict, StateDict]:
    """(unet, vae, clip) state dicts with their checkpoint prefixes removed."""
    unet = {k[len(UNET_PREFIX) :]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    vae = {k[len(VAE_PREFIX) :]: v for k, v in sd.items() if k.startswith(VAE_PREFIX)}
    clip: StateDict = {}
    for prefix in CLIP_PREFIXES:
        clip = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if clip:
            break
    clip.pop("embeddings.position_ids", None)
    return unet, vae, clip


def _block_indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _transformer_depth(unet: StateDict, prefix: str) -> int:
    return len(_block_indices(list(unet), re.escape(prefix) + r"transformer_blocks\.(\d+)\."))


def derive_unet_config(unet: StateDict) -> UNetConfig:
    """UNet layout read from the keys: levels, res blocks, transformer depths, middle block, widths."""
    from .unet import UNetConfig

    keys = list(unet)
    model_channels, in_channels = unet["input_blocks.0.0.weight"].shape[:2]
    channel_mult: list[int] = []
    num_res_blocks: list[int] = []
    depth_in: list[int] = []
    context_dim = None
    use_linear = False
    level_blocks = 0
    for idx in _block_indices(keys, r"input_blocks\.(\d+)\.")[1:]:
        p = f"input_blocks.{idx}."
        if p + "0.op.weight" in unet:
            num_res_blocks.append(level_blocks)
            level_blocks = 0
            continue
        out_ch = unet[p + "0.out_layers.3.weight"].shape[0]
        if level_blocks == 0:
            channel_mult.append(out_ch // model_channels)
        level_blocks += 1
        depth = _transformer_depth(unet, p + "1.")
        depth_in.append(depth)
        if depth and context_dim is None:
            context_dim = unet[p + "1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
            use_linear = unet[p + "1.proj_in.weight"].ndim == 2
    num_res_blocks.append(level_blocks)

    depth_out = [
        _transformer_depth(unet, f"output_blocks.{i}.1.") for i in _block_indices(keys, r"output_blocks\.(\d+)\.")
    ]
    if "middle_block.0.in_layers.0.weight" not in unet:
        depth_middle = None
    elif "middle_block.1.proj_in.weight" in unet:
        depth_middle = _transformer_depth(unet, "middle_block.1.")
    else:
        depth_middle = -1
    if context_dim is None and depth_middle:
        context_dim = unet["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    return UNetConfig(
        in_channels=int(in_channels),
        out_channels=int(unet["out.2.weight"].shape[0]),
        model_channels=int(model_channels),
        channel_mult=tuple(channel_mult),
        num_res_blocks=tuple(num_res_blocks),
        transformer_depth=tuple(depth_in),
        transformer_depth_output=tuple(depth_out),
        transformer_depth_middle=depth_middle,
        context_dim=int(context_dim or 0),
        num_heads=8,
        use_linear_in_transformer=use_linear,
        adm_in_channels=int(unet["label_emb.0.0.weight"].shape[1]) if "label_emb.0.0.weight" in unet else None,
    )


def detect_model_type(unet_config: UNetConfig) -> str:
    """Model family of a UNet layout: "sd15" (SD1.x); SD2.x and SDXL are named so callers can refuse them."""
    c = unet_config
    if c.adm_in_channels is not None and c.context_dim == 2048:
        return "sdxl"
    if c.context_dim == 1024 and c.use_linear_in_transformer:
        return "sd2"
    if (
        c.model_channels == 320
        and c.context_dim == 768
        and not c.use_linear_in_transformer
        and c.adm_in_channels is None
        and c.in_channels == 4
    ):
        return "sd15"
    return "unknown"


def load_weights(module: torch.nn.Module, sd: StateDict, what: str) -> None:
    """Assign the tensors of `sd` to a module built on the meta device (no copies).

    Missing weights are an error (they would stay uninitialised); extra tensors,
    such as EMA copies, are ignored as ComfyUI does.
    """
    missing, _unexpected = module.load_state_dict(sd, strict=False, assign=True)
    if missing:
        raise ValueError(f"{what}: {len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}")


_load_module = load_weights


def build_clip(
    clip_sd: StateDict, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float16
) -> CLIPTextModel:
    """SD1 text encoder storing its weights in `dtype` (fp16 by default; None keeps the given dtypes).

    The maths always runs in fp32 (see layers.py), so the storage dtype only rounds the weights.
    """
    with torch.device("meta"):
        model = CLIPTextModel()
    sd = {
        k: (v.to(device=device, dtype=dtype or v.dtype) if v.is_floating_point() else v)
        for k, v in clip_sd.items()
        if k != "embeddings.position_ids"
    }
    load_weights(model, sd, "text encoder")
    return model.eval().requires_grad_(False)


def build_unet(
    unet_sd: StateDict, config: UNetConfig | None = None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> UNetModel:
    from .unet import UNetModel

    config = config or derive_unet_config(unet_sd)
    with torch.device("meta"):
        model = UNetModel(config)
    load_weights(model, {k: v.to(device=device, dtype=dtype) for k, v in unet_sd.items()}, "UNet")
    return model.eval().requires_grad_(False)


def build_vae(vae_sd: StateDict, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    from .vae import AutoencoderKL

    with torch.device("meta"):
        model = AutoencoderKL()
    load_weights(model, {k: v.to(device=device, dtype=dtype) for k, v in vae_sd.items()}, "VAE")
    return model.eval().requires_grad_(False)


@dataclass
class Checkpoint:
    """The three models of a checkpoint, ready to run."""

    model_type: str
    unet_config: UNetConfig
    unet: UNetModel
    vae: AutoencoderKL | None
    clip: CLIPTextModel | None


def load_checkpoint(
    path: Path | str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Checkpoint:
    """Read a single-file checkpoint and build its UNet, VAE and text encoder.

    UNet and VAE are converted to `dtype` (fp32 matches ComfyUI on the CPU); the
    text encoder keeps fp16 weights. Raises UnsupportedCheckpoint for families
    other than SD1.x.
    """
    unet_sd, vae_sd, clip_sd = split_state_dict(read_state_dict(path))
    if "input_blocks.0.0.weight" not in unet_sd:
        raise UnsupportedCheckpoint(f"{Path(path).name}: no UNet weights under '{UNET_PREFIX}'")
    config = derive_unet_config(unet_sd)
    model_type = detect_model_type(config)
    if model_type != "sd15":
        raise UnsupportedCheckpoint(f"{Path(path).name}: model type '{model_type}' is not supported yet")
    return Checkpoint(
        model_type=model_type,
        unet_config=config,
        unet=build_unet(unet_sd, config, device, dtype),
        vae=build_vae(vae_sd, device, dtype) if vae_sd else None,
        clip=build_clip(clip_sd, device) if clip_sd else None,
    )
