"""The Wan 2.1 VAE saved by diffusers (``AutoencoderKLWan``, Qwen-Image's too), read under :mod:`.wan_vae`'s names.

The encoder's blocks are one flat list in both layouts (``down_blocks.N`` is
``downsamples.N``); the decoder's are grouped by level in diffusers
(``up_blocks.L.resnets.J``, ``up_blocks.L.upsamplers.0``) and flat here
(``upsamples.N``: each level's res blocks, then its upsampler). Inside a block
diffusers names the layers (``norm1``, ``conv1``, ``norm2``, ``conv2``,
``conv_shortcut``) where the original has positions in a sequence
(``residual.0/2/3/6``, ``shortcut``); the 16-channel latent's 1x1 convolutions
are ``quant_conv`` / ``post_quant_conv`` there, ``conv1`` / ``conv2`` here.
"""

from __future__ import annotations

import re

from ..model.detection import Shapes, count
from ..model.folders import KeyLayout

_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut", "resample.1": "resample.1", "time_conv": "time_conv",
             "norm": "norm", "to_qkv": "to_qkv", "proj": "proj"}
_OUTER = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}


def is_diffusers_wan21_vae(shapes: Shapes) -> bool:
    conv = shapes.get("decoder.conv_in.weight")
    return conv is not None and len(conv) == 5 and conv[1] == 16 \
        and "decoder.up_blocks.0.resnets.0.norm1.gamma" in shapes and "encoder.down_blocks.0.norm1.gamma" in shapes


def _inner(rest: str) -> str | None:
    layer, _, end = rest.rpartition(".")
    return f"{_RESIDUAL[layer]}.{end}" if layer in _RESIDUAL else None


def vae_key_layout(shapes: Shapes) -> KeyLayout | None:
    """The renaming of a diffusers Wan 2.1 VAE's keys to the original ones (None if the keys are not one)."""
    if not is_diffusers_wan21_vae(shapes):
        return None
    per_level = {i: count(shapes, rf"decoder\.up_blocks\.{i}\.resnets\.(\d+)\.")
                 for i in range(count(shapes, r"decoder\.up_blocks\.(\d+)\."))}
    starts, n = {}, 0
    for i, res in per_level.items():
        starts[i] = n
        n += res + (1 if f"decoder.up_blocks.{i}.upsamplers.0.resample.1.weight" in shapes else 0)
    names: dict[str, str] = {}
    for key in shapes:
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            names[key] = key.replace("post_quant_conv.", "conv2.") if key.startswith("post_") \
                else key.replace("quant_conv.", "conv1.")
            continue
        side, _, rest = key.partition(".")
        if (m := re.match(r"(conv_in|norm_out|conv_out)\.(\w+)$", rest)) is not None:
            names[key] = f"{side}.{_OUTER[m.group(1)]}.{m.group(2)}"
        elif (m := re.match(r"down_blocks\.(\d+)\.(.+)$", rest)) is not None and (inner := _inner(m.group(2))):
            names[key] = f"{side}.downsamples.{m.group(1)}.{inner}"
        elif (m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", rest)) is not None \
                and (inner := _inner(m.group(3))):
            slot = 1 if m.group(1) == "attentions" else 2 * int(m.group(2))
            names[key] = f"{side}.middle.{slot}.{inner}"
        elif (m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", rest)) is not None \
                and (inner := _inner(m.group(3))):
            names[key] = f"{side}.upsamples.{starts[int(m.group(1))] + int(m.group(2))}.{inner}"
        elif (m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", rest)) is not None \
                and (inner := _inner(m.group(2))):
            level = int(m.group(1))
            names[key] = f"{side}.upsamples.{starts[level] + per_level[level]}.{inner}"
    return KeyLayout(names=names)
