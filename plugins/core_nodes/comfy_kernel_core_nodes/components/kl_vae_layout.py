"""The KL autoencoder saved by diffusers (``AutoencoderKL``), read under the LDM names of :mod:`.kl_vae`.

Diffusers names the levels ``down_blocks`` / ``up_blocks`` (the decoder's in
reverse order: its ``up_blocks.0`` is the LDM ``up.<last>``), the res blocks
``resnets``, the middle block ``mid_block`` and stores the middle attention's
q, k, v and output projections as linear weights, where the LDM network has 1x1
convolutions: those are reshaped on read. Older diffusers files name the
attention layers ``query``/``key``/``value``/``proj_attn``; both are read. The
same renaming serves the 4-channel SD VAE and the 16-channel SD3 / Flux.1 one.
"""

from __future__ import annotations

import re

from ..model.detection import Shapes, count
from ..model.folders import KeyLayout

_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
              "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def is_diffusers_vae(shapes: Shapes, prefix: str = "") -> bool:
    return (prefix + "decoder.up_blocks.0.resnets.0.norm1.weight" in shapes
            and prefix + "encoder.down_blocks.0.resnets.0.conv1.weight" in shapes)


def _part(shapes: Shapes, theirs: str, ours: str, names: dict[str, str], reshaped: dict[str, tuple[int, ...]],
          renames: dict[str, str], attention: bool = False) -> None:
    for key in shapes:
        if not key.startswith(theirs + "."):
            continue
        rest = key[len(theirs) + 1:]
        layer, _, end = rest.rpartition(".")
        if layer in renames:
            new = f"{ours}.{renames[layer]}.{end}"
            names[key] = new
            if attention and layer != "group_norm" and len(shapes[key]) == 2:
                reshaped[new] = tuple(shapes[key]) + (1, 1)


def vae_key_layout(shapes: Shapes) -> KeyLayout | None:
    """The renaming of a diffusers AutoencoderKL's keys to the LDM names (None if the keys are not one)."""
    if not is_diffusers_vae(shapes):
        return None
    names: dict[str, str] = {}
    reshaped: dict[str, tuple[int, ...]] = {}
    for side in ("encoder", "decoder"):
        for layer in ("conv_in", "conv_out"):
            for end in ("weight", "bias"):
                names[f"{side}.{layer}.{end}"] = f"{side}.{layer}.{end}"
        for end in ("weight", "bias"):
            names[f"{side}.conv_norm_out.{end}"] = f"{side}.norm_out.{end}"
        for j in range(2):
            _part(shapes, f"{side}.mid_block.resnets.{j}", f"{side}.mid.block_{j + 1}", names, reshaped, _RESNET)
        _part(shapes, f"{side}.mid_block.attentions.0", f"{side}.mid.attn_1", names, reshaped, _ATTENTION, True)
    down = count(shapes, r"encoder\.down_blocks\.(\d+)\.")
    for i in range(down):
        for j in range(count(shapes, rf"encoder\.down_blocks\.{i}\.resnets\.(\d+)\.")):
            _part(shapes, f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", names, reshaped,
                  _RESNET)
        _part(shapes, f"encoder.down_blocks.{i}.downsamplers.0", f"encoder.down.{i}.downsample", names, reshaped,
              {"conv": "conv"})
    up = count(shapes, r"decoder\.up_blocks\.(\d+)\.")
    for i in range(up):
        level = up - 1 - i
        for j in range(count(shapes, rf"decoder\.up_blocks\.{i}\.resnets\.(\d+)\.")):
            _part(shapes, f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{level}.block.{j}", names, reshaped,
                  _RESNET)
        _part(shapes, f"decoder.up_blocks.{i}.upsamplers.0", f"decoder.up.{level}.upsample", names, reshaped,
              {"conv": "conv"})
    for key in shapes:
        if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
            names[key] = key
    return KeyLayout(names={k: v for k, v in names.items() if k in shapes}, shapes=reshaped)
