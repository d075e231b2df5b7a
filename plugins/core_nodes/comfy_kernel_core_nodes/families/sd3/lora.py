"""LoRA names of the MMDiT's layers in the diffusers layout (``transformer.transformer_blocks.N.attn.to_q``...).

diffusers splits each fused ``qkv`` projection into ``to_q`` / ``to_k`` /
``to_v`` (``add_*_proj`` for the text half): those map to a slice of the
fused weight, ``(key, (dim, offset, size))``, as ComfyUI's key maps do. The
final modulation (and the last text half's, which is pre-only) stores shift
and scale in the other order: those patches go through :func:`swap_scale_shift`.
"""

from __future__ import annotations

from typing import Any

import torch

_BLOCK = {
    "context_block.adaLN_modulation.1": "norm1_context.linear",
    "context_block.attn.proj": "attn.to_add_out",
    "context_block.mlp.fc1": "ff_context.net.0.proj",
    "context_block.mlp.fc2": "ff_context.net.2",
    "context_block.attn.ln_q": "attn.norm_added_q",
    "context_block.attn.ln_k": "attn.norm_added_k",
    "x_block.adaLN_modulation.1": "norm1.linear",
    "x_block.attn.proj": "attn.to_out.0",
    "x_block.attn.ln_q": "attn.norm_q",
    "x_block.attn.ln_k": "attn.norm_k",
    "x_block.attn2.proj": "attn2.to_out.0",
    "x_block.attn2.ln_q": "attn2.norm_q",
    "x_block.attn2.ln_k": "attn2.norm_k",
    "x_block.mlp.fc1": "ff.net.0.proj",
    "x_block.mlp.fc2": "ff.net.2",
}
_BASIC = {
    "context_embedder": "context_embedder",
    "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "x_embedder.proj": "pos_embed.proj",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
    "final_layer.linear": "proj_out",
}


def swap_scale_shift(weight: torch.Tensor) -> torch.Tensor:
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def diffusers_names(unet_config: dict[str, Any], prefix: str = "diffusion_model.") -> dict[str, Any]:
    """diffusers layer name (no ``.weight``) -> model weight key, or (key, (dim, offset, size)) / (key, None, fn)."""
    depth = unet_config["depth"]
    width = depth * 64
    out: dict[str, Any] = {}
    for i in range(depth):
        src, dst = f"transformer_blocks.{i}", f"{prefix}joint_blocks.{i}"
        for half, names in (("x_block.attn", ("to_q", "to_k", "to_v")),
                            ("context_block.attn", ("add_q_proj", "add_k_proj", "add_v_proj")),
                            ("x_block.attn2", ("to_q", "to_k", "to_v"))):
            owner = "attn2" if half.endswith("attn2") else "attn"
            for j, name in enumerate(names):
                out[f"{src}.{owner}.{name}"] = (f"{dst}.{half}.qkv.weight", (0, j * width, width))
        for ours, theirs in _BLOCK.items():
            out[f"{src}.{theirs}"] = f"{dst}.{ours}.weight"
    for ours, theirs in _BASIC.items():
        out[theirs] = f"{prefix}{ours}.weight"
    out["norm_out.linear"] = (f"{prefix}final_layer.adaLN_modulation.1.weight", None, swap_scale_shift)
    out[f"transformer_blocks.{depth - 1}.norm1_context.linear"] = (
        f"{prefix}joint_blocks.{depth - 1}.context_block.adaLN_modulation.1.weight", None, swap_scale_shift)
    return out


def lora_keys(unet_config: dict[str, Any], model_keys: set[str], key_map: dict[str, Any]) -> dict[str, Any]:
    """Add the diffusers-format LoRA names (``transformer.``, ``base_model.model.``, OneTrainer's
    ``lora_transformer_``, SimpleTuner's ``lycoris_``) of the layers this model has."""
    for name, target in diffusers_names(unet_config).items():
        key = target if isinstance(target, str) else target[0]
        if key not in model_keys:
            continue
        flat = name.replace(".", "_")
        for lora_name in (f"transformer.{name}", f"base_model.model.{name}", f"lora_transformer_{flat}",
                          f"lycoris_{flat}"):
            key_map[lora_name] = target
    return key_map
