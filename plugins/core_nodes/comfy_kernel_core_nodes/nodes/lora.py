"""LoRA: low-rank weight deltas merged into a model part when it is loaded.

A patched model is registered with the model manager under its own key (base
file + LoRA files + strengths), and its loader merges ``W += strength *
(alpha / rank) * up @ down`` into freshly read weights. The base model is
never modified, so branches of a graph with and without the LoRA stay correct.

Recognised key layouts: kohya-style ``lora_unet_<LDM module path>`` and
``lora_te_text_model_<HF module path>`` (dots as underscores), the same with
the diffusers UNet block names of the standard SD1.5 layout
(``down_blocks_1_attentions_0_...``), with ``lora_up/lora_down`` or
``lora_A/lora_B`` weights and an optional ``alpha``.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from . import context
from .common import NodeDef

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_RESNET_NAMES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                 "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def _resnet_inner(rest: str) -> str:
    for ldm, diffusers in _RESNET_NAMES.items():
        if rest == ldm or rest.startswith(ldm + "."):
            return diffusers + rest[len(ldm):]
    return rest


def ldm_to_diffusers(module: str) -> str | None:
    """An LDM UNet module path -> its diffusers name, for the standard SD1.5 layout (2 res blocks per level)."""
    m = re.match(r"input_blocks\.(\d+)\.(\d)\.(.+)", module)
    if m:
        n, slot, rest = int(m[1]), int(m[2]), m[3]
        if n == 0:
            return None
        if n % 3 == 0:
            return f"down_blocks.{n // 3 - 1}.downsamplers.0.conv" if rest == "op" else None
        block, j = (n - 1) // 3, (n - 1) % 3
        if slot == 0:
            return f"down_blocks.{block}.resnets.{j}.{_resnet_inner(rest)}"
        return f"down_blocks.{block}.attentions.{j}.{rest}"
    m = re.match(r"output_blocks\.(\d+)\.(\d)\.(.+)", module)
    if m:
        n, slot, rest = int(m[1]), int(m[2]), m[3]
        block, j = n // 3, n % 3
        if slot == 0:
            return f"up_blocks.{block}.resnets.{j}.{_resnet_inner(rest)}"
        if rest == "conv":
            return f"up_blocks.{block}.upsamplers.0.conv"
        return f"up_blocks.{block}.attentions.{j}.{rest}"
    m = re.match(r"middle_block\.(\d)\.(.+)", module)
    if m:
        slot, rest = int(m[1]), m[2]
        if slot == 1:
            return f"mid_block.attentions.0.{rest}"
        return f"mid_block.resnets.{slot // 2}.{_resnet_inner(rest)}"
    return None


def _key_map(sd: dict[str, Any], kind: str) -> dict[str, str]:
    """LoRA module name -> weight key of ``sd`` for one model part."""
    out: dict[str, str] = {}
    for key in (k for k in sd if k.endswith(".weight")):
        module = key[: -len(".weight")]
        if kind == "unet":
            out["lora_unet_" + module.replace(".", "_")] = key
            diffusers = ldm_to_diffusers(module)
            if diffusers is not None:
                out["lora_unet_" + diffusers.replace(".", "_")] = key
        elif kind == "clip":
            out["lora_te_text_model_" + module.replace(".", "_")] = key
            out["lora_te1_text_model_" + module.replace(".", "_")] = key
    return out


def load_lora_file(path: str) -> dict[str, torch.Tensor]:
    from ..sd.checkpoint import read_state_dict

    return read_state_dict(path)


def _delta(up: torch.Tensor, down: torch.Tensor, alpha: float | None, shape: torch.Size) -> torch.Tensor:
    rank = down.shape[0]
    scale = (alpha / rank) if alpha is not None else 1.0
    delta = up.flatten(1).float() @ down.flatten(1).float()
    return (delta * scale).reshape(shape)


def apply_loras(sd: dict[str, torch.Tensor], patches: tuple[tuple[str, float], ...], kind: str,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Merge every LoRA of ``patches`` into a copy of the affected weights of ``sd``."""
    names = _key_map(sd, kind)
    for lora_path, strength in patches:
        if strength == 0:
            continue
        lora = load_lora_file(lora_path)
        modules = {k.rsplit(".", 2)[0] if k.endswith((".lora_up.weight", ".lora_down.weight", ".lora_A.weight",
                                                        ".lora_B.weight")) else None for k in lora}
        modules.discard(None)
        applied = 0
        for module in modules:
            target = names.get(module)
            if target is None:
                continue
            up = lora.get(f"{module}.lora_up.weight", lora.get(f"{module}.lora_B.weight"))
            down = lora.get(f"{module}.lora_down.weight", lora.get(f"{module}.lora_A.weight"))
            if up is None or down is None:
                continue
            alpha = lora.get(f"{module}.alpha")
            weight = sd[target]
            delta = _delta(up, down, float(alpha) if alpha is not None else None, weight.shape)
            sd[target] = (weight.float() + strength * delta.to(weight.device)).to(weight.dtype)
            applied += 1
        log.info("LoRA %s: %d %s weights patched", lora_path, applied, kind)
    return sd


def _lora_path(name: str) -> str:
    return context.full_path("loras", name)


class LoraLoader:
    DESCRIPTION = "Applies a LoRA to the diffusion model and the text encoder."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The patched diffusion model.", "The patched text encoder.")
    FUNCTION = "load_lora"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model to patch."}),
            "clip": ("CLIP", {"tooltip": "The text encoder to patch."}),
            "lora_name": (context.list_files("loras"), {"tooltip": "The LoRA file."}),
            "strength_model": ("FLOAT", {**strength, "tooltip": "How strongly to change the diffusion model."}),
            "strength_clip": ("FLOAT", {**strength, "tooltip": "How strongly to change the text encoder."}),
        }}

    def load_lora(self, model: Any, clip: Any, lora_name: str, strength_model: float,
                  strength_clip: float) -> tuple[Any, Any]:
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        path = _lora_path(lora_name)
        new_model = model.with_patch(path, strength_model) if strength_model != 0 else model
        new_clip = clip.with_patch(path, strength_clip) if clip is not None and strength_clip != 0 else clip
        return (new_model, new_clip)


class LoraLoaderModelOnly:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "lora_name": (context.list_files("loras"),),
                             "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0,
                                                          "step": 0.01})}}

    def load_lora_model_only(self, model: Any, lora_name: str, strength_model: float) -> tuple[Any]:
        if strength_model == 0:
            return (model,)
        return (model.with_patch(_lora_path(lora_name), strength_model),)


NODES = [
    NodeDef("LoraLoader", LoraLoader, "Load LoRA", "nodes"),
    NodeDef("LoraLoaderModelOnly", LoraLoaderModelOnly, "LoraLoaderModelOnly", "nodes"),
]
