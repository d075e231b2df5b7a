"""Random-weight ``model_patches`` files in the released key layouts, sized to the test transformers.

The key tables are written out here (not taken from the plugin's modules), so
a naming mistake on either side shows up as a load failure.
"""

from __future__ import annotations

import torch
from _random_weights import random_state_dict


def blockwise_controlnet_sd(dim: int, layers: int, inpaint: bool = False, zero_output: bool = False,
                            seed: int = 21, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """DiffSynth's Qwen-Image blockwise ControlNet: ``img_in`` (64 inputs, 68 for the inpaint variant) and
    ``layers`` control blocks; ``zero_output`` zeroes every ``output_proj`` as freshly initialised files do."""
    shapes: dict[str, tuple[int, ...]] = {"img_in.weight": (dim, 68 if inpaint else 64), "img_in.bias": (dim,)}
    for i in range(layers):
        block = f"controlnet_blocks.{i}."
        shapes.update({block + "x_rms.weight": (dim,), block + "y_rms.weight": (dim,),
                       block + "input_proj.weight": (dim, dim), block + "input_proj.bias": (dim,),
                       block + "output_proj.weight": (dim, dim), block + "output_proj.bias": (dim,)})
    sd = random_state_dict(shapes, seed, dtype)
    for key in sd:
        if "output_proj" in key:
            sd[key] = sd[key] * (0 if zero_output else 20)  # unit-gain weights would leave a faint change
    return sd


def uso_projector_sd(hidden: int, siglip_tokens: int = 729, siglip_dim: int = 1152, style_tokens: int = 64,
                     seed: int = 22, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """USO's SigLIP multi-feature projector (``feature_embedder.{high,mid,low}_*``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for level in ("high", "mid", "low"):
        p = f"feature_embedder.{level}_"
        shapes.update({p + "embedding_linear.0.weight": (style_tokens, siglip_tokens),
                       p + "embedding_linear.0.bias": (style_tokens,),
                       p + "layer_norm.weight": (siglip_dim,), p + "layer_norm.bias": (siglip_dim,),
                       p + "projection.weight": (hidden, siglip_dim), p + "projection.bias": (hidden,)})
    return random_state_dict(shapes, seed, dtype)


def _z_block(prefix: str, dim: int, head_dim: int, ffn: int, adaln: int, first: bool, control: bool
             ) -> dict[str, tuple[int, ...]]:
    shapes = {prefix + "attention.to_q.weight": (dim, dim), prefix + "attention.to_k.weight": (dim, dim),
              prefix + "attention.to_v.weight": (dim, dim), prefix + "attention.to_out.0.weight": (dim, dim),
              prefix + "attention.norm_q.weight": (head_dim,), prefix + "attention.norm_k.weight": (head_dim,),
              prefix + "feed_forward.w1.weight": (ffn, dim), prefix + "feed_forward.w2.weight": (dim, ffn),
              prefix + "feed_forward.w3.weight": (ffn, dim),
              prefix + "adaLN_modulation.0.weight": (4 * dim, adaln), prefix + "adaLN_modulation.0.bias": (4 * dim,)}
    for norm in ("attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"):
        shapes[f"{prefix}{norm}.weight"] = (dim,)
    if control:
        shapes.update({prefix + "after_proj.weight": (dim, dim), prefix + "after_proj.bias": (dim,)})
        if first:
            shapes.update({prefix + "before_proj.weight": (dim, dim), prefix + "before_proj.bias": (dim,)})
    return shapes


def z_image_fun_controlnet_sd(dim: int = 3840, head_dim: int = 128, ffn: int = 10240, layers: int = 6,
                              refiner_control: bool = False, zero_output: bool = False, seed: int = 23,
                              refiners: int = 2,
                              dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Alibaba PAI's Z-Image fun union ControlNet in its released (diffusers-style) names: the first release
    (``refiner_control`` False: plain refiner blocks, 16 input channels) or the 2.x layout (refiner control
    blocks with their own projections, 33 input channels). ``zero_output`` zeroes every ``after_proj``;
    ``refiners`` follows the transformer's noise-refiner depth."""
    adaln = min(dim, 256)
    shapes: dict[str, tuple[int, ...]] = {"control_all_x_embedder.2-1.weight": (dim, 4 * (33 if refiner_control else 16)),
                                          "control_all_x_embedder.2-1.bias": (dim,)}
    for i in range(layers):
        shapes.update(_z_block(f"control_layers.{i}.", dim, head_dim, ffn, adaln, i == 0, True))
    for i in range(refiners):
        shapes.update(_z_block(f"control_noise_refiner.{i}.", dim, head_dim, ffn, adaln, i == 0, refiner_control))
    sd = random_state_dict(shapes, seed, dtype)
    for key in sd:
        if "after_proj" in key:
            sd[key] = sd[key] * (0 if zero_output else 4)
    return sd


def z_image_fun_controlnet_file():
    """The 2.x layout at Z-Image's width with one control layer and one refiner block (as the one-refiner test
    transformer of _files_qwen.py has) and a narrow feed-forward (read from the keys), bf16, about 0.4 GB;
    kept in the repository's ``.cache``."""
    from _random_weights import cached_file

    return cached_file("v1-z_image_fun_controlnet_union_2x_ffn256.safetensors",
                       lambda: z_image_fun_controlnet_sd(ffn=256, layers=1, refiner_control=True, refiners=1))
