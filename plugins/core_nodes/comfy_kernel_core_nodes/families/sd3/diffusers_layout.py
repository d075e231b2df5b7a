"""SD3 / SD3.5 MMDiTs saved by diffusers (``SD3Transformer2DModel``), read under ComfyUI's MMDiT names.

The names are the LoRA key map's (:func:`.lora.diffusers_names`): diffusers'
separate q, k and v projections are concatenated into the fused ``qkv`` layers
as the file is read, and the final modulations (the last text block's and the
output layer's), which diffusers stores as (scale, shift), are put back in the
(shift, scale) order. Depth and variant (q/k norms, SD3.5 Medium's extra
attention) come from the keys, as for the original layout.
"""

from __future__ import annotations

import re

from ...model.detection import Shapes, count
from ...model.folders import KeyLayout


def is_diffusers_mmdit(shapes: Shapes) -> bool:
    return all(k in shapes for k in ("pos_embed.proj.weight", "context_embedder.weight",
                                     "transformer_blocks.0.attn.to_q.weight",
                                     "time_text_embed.timestep_embedder.linear_1.weight"))


def mmdit_key_layout(shapes: Shapes) -> KeyLayout | None:
    """The renaming of a diffusers SD3 transformer's keys to the MMDiT's (None if the keys are not one)."""
    if not is_diffusers_mmdit(shapes):
        return None
    from .lora import diffusers_names

    depth = count(shapes, r"transformer_blocks\.(\d+)\.")
    names: dict[str, str] = {}
    joined: dict[str, list[str]] = {}
    transforms = {}
    for theirs, target in diffusers_names({"depth": depth}, prefix="").items():
        for end in ("weight", "bias"):
            if isinstance(target, str):
                names[f"{theirs}.{end}"] = re.sub(r"\.weight$", f".{end}", target)
            elif target[1] is not None:  # one of q, k, v of a fused projection, in order
                joined.setdefault(re.sub(r"\.weight$", f".{end}", target[0]), []).append(f"{theirs}.{end}")
            else:
                ours = re.sub(r"\.weight$", f".{end}", target[0])
                names[f"{theirs}.{end}"] = ours
                transforms[ours] = target[2]
    if "pos_embed.pos_embed" in shapes:
        names["pos_embed.pos_embed"] = "pos_embed"
    return KeyLayout(names={k: v for k, v in names.items() if k in shapes}, joined=joined, transforms=transforms)
