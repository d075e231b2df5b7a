"""Random-weight SD3.5 ControlNets in Stability's layout, made from diffusers' SD3ControlNetModel.

diffusers builds the network (image-only blocks, ``joint_attention_dim=None``,
as its SD3.5 Large ControlNet configs); the file gets Stability's key names:
fused ``attn.qkv``, ``adaLN_modulation.1``, ``mlp.fc1/fc2``, the embedders as
``time_text_embed.*`` and a ``control_type`` scalar (2: depth). The latent's
patch embedder is left out, as the released files do.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

BLOCKS = 2


def diffusers_controlnet(heads: int = 3, seed: int = 0, zero_out: bool = False):
    from diffusers.models.controlnets.controlnet_sd3 import SD3ControlNetModel

    torch.manual_seed(seed)
    net = SD3ControlNetModel(num_layers=BLOCKS, attention_head_dim=64, num_attention_heads=heads,
                             joint_attention_dim=None, pooled_projection_dim=2048, pos_embed_max_size=None,
                             pos_embed_type=None, use_pos_embed=False, force_zeros_for_pooled_projection=False)
    with torch.no_grad():
        for name, tensor in net.named_parameters():
            if zero_out and name.startswith("controlnet_blocks."):
                tensor.zero_()
            else:
                tensor.copy_(torch.randn_like(tensor) * 0.05)
    return net.eval()


def stability_state_dict(net) -> dict[str, torch.Tensor]:
    """diffusers' names -> the released SD3.5 ControlNet file's."""
    sd = net.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        if key.startswith(("time_text_embed.", "controlnet_blocks.", "pos_embed_input.")):
            out[key] = tensor
    for i in range(BLOCKS):
        d, s = f"transformer_blocks.{i}.", f"transformer_blocks.{i}."
        for part in ("weight", "bias"):
            out[s + "attn.qkv." + part] = torch.cat([sd[d + f"attn.to_{x}.{part}"] for x in "qkv"])
            out[s + "attn.proj." + part] = sd[d + "attn.to_out.0." + part]
            out[s + "adaLN_modulation.1." + part] = sd[d + "norm1.linear." + part]
            out[s + "mlp.fc1." + part] = sd[d + "ff.net.0.proj." + part]
            out[s + "mlp.fc2." + part] = sd[d + "ff.net.2." + part]
    out["control_type"] = torch.tensor(2.0)
    return {k: v.contiguous() for k, v in out.items()}


def write_sd35_controlnet(path: Path, heads: int = 3, seed: int = 0, zero_out: bool = False,
                          dtype: torch.dtype = torch.float32) -> Path:
    net = diffusers_controlnet(heads, seed, zero_out)
    sd = {k: v.to(dtype) if k != "control_type" else v for k, v in stability_state_dict(net).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
