"""Random-weight control model files in their real key layouts, for the tiny SD1.5 checkpoint's UNet layout.

Each writer builds the network on the meta device to get the exact key set,
fills it with :func:`_random_weights.random_state_dict` (seeded, so the
files are the same on every run and in the scripts that captured ComfyUI's
outputs) and renames keys to the layout under test. ``zero=True`` zeroes the
ControlNet's output convolutions (a fresh ControlNet before training).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _random_weights import random_state_dict, write  # noqa: E402

#: The tiny checkpoint's UNet layout (see shared/reference/make_checkpoint.py, preset "tiny").
TINY_LAYOUT = {
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": (1, 2), "num_res_blocks": (1, 1),
    "transformer_depth": (1, 0), "transformer_depth_output": (0, 0, 1, 1), "transformer_depth_middle": 1,
    "context_dim": 768, "use_linear_in_transformer": False, "adm_in_channels": None,
    "num_heads": 8, "num_head_channels": -1,
}


def tiny_layout() -> Any:
    from comfy_kernel_core_nodes.families.sd.models import unet_layout

    return unet_layout(TINY_LAYOUT)


def controlnet_sd(seed: int = 1, zero: bool = False, hint_channels: int = 3, union_types: int | None = None,
                  only_zero_conv: int | None = None) -> dict[str, torch.Tensor]:
    """LDM-layout ControlNet tensors; ``only_zero_conv`` keeps one output conv non-zero (others and middle zero)."""
    from comfy_kernel_core_nodes.families.sd.controlnet import ControlNetModel

    with torch.device("meta"):
        net = ControlNetModel(tiny_layout(), hint_channels, union_types=union_types)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    sd = random_state_dict(shapes, seed=seed)
    for key in sd:
        is_out = key.startswith(("zero_convs.", "middle_block_out."))
        if is_out and (zero or (only_zero_conv is not None and not key.startswith(f"zero_convs.{only_zero_conv}."))):
            sd[key] = torch.zeros_like(sd[key])
    return sd


def write_controlnet(path: Path, seed: int = 1, zero: bool = False, prefix: str = "", **kwargs: Any) -> Path:
    sd = controlnet_sd(seed, zero, **kwargs)
    return write(path, {prefix + k: v for k, v in sd.items()})


def to_diffusers(sd: dict[str, torch.Tensor], union: bool = False) -> dict[str, torch.Tensor]:
    """The same ControlNet under diffusers key names (the inverse of the loader's renaming)."""
    from comfy_kernel_core_nodes.families.sd.controlnet import diffusers_to_ldm

    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    hint_blocks = len([k for k in sd if k.startswith("input_hint_block.") and k.endswith(".weight")])
    zero_convs = len([k for k in sd if k.startswith("zero_convs.") and k.endswith(".weight")])
    fake = {f"controlnet_cond_embedding.blocks.{n}.weight": () for n in range(hint_blocks - 2)}
    fake.update({f"controlnet_down_blocks.{n}.weight": () for n in range(zero_convs)})
    names = diffusers_to_ldm(TINY_LAYOUT, {**shapes, **fake}, set(sd))
    inverse = {ldm: diff for diff, ldm in names.items()}
    out = {}
    for key, tensor in sd.items():
        if key in inverse:
            out[inverse[key]] = tensor
        elif union:
            out[key.replace(".attn.in_proj.", ".attn.in_proj_")] = tensor
        else:
            raise KeyError(f"no diffusers name for {key}")
    return out


def control_lora_sd(seed: int = 3, rank: int = 4, hint_channels: int = 3) -> dict[str, torch.Tensor]:
    """A Control-LoRA: hint block, output convs and norms in full, the encoder's convs/linears as up/down."""
    sd = controlnet_sd(seed, hint_channels=hint_channels)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {"lora_controlnet": torch.tensor([])}
    for key, tensor in sd.items():
        own = key.startswith(("input_hint_block.", "zero_convs.", "middle_block_out."))
        if own or tensor.ndim < 2:
            out[key] = tensor
        elif key.endswith(".weight"):
            name = key[:-len(".weight")]
            rows, cols = tensor.shape[0], int(tensor[0].numel())
            up = torch.randn(rows, rank, generator=generator) * 0.02
            down = torch.randn(rank, cols, generator=generator) * 0.02
            out[name + ".up"] = up.reshape(rows, rank, *([1] * (tensor.ndim - 2))).half()
            out[name + ".down"] = down.reshape(rank, *tensor.shape[1:]).half()
    return out


def t2i_adapter_sd(seed: int = 5, light: bool = False, channel: int = 32) -> dict[str, torch.Tensor]:
    """A full T2I-Adapter (``channel`` wide, 3-channel hints) or a light one (SD1.5 widths)."""
    from comfy_kernel_core_nodes.components.t2i_adapter import Adapter, AdapterLight

    with torch.device("meta"):
        net = AdapterLight(cin=192, nums_rb=4) if light else Adapter(
            channels=[channel, channel * 2, channel * 4, channel * 4], nums_rb=2, cin=192, ksize=1, sk=True,
            use_conv=False)
    return random_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items()}, seed=seed)


def tiny_lora_sd(seed: int = 21, rank: int = 4) -> dict[str, torch.Tensor]:
    """A kohya-named LoRA for the tiny checkpoint: a few UNet layers and CLIP-L's first attention block."""
    generator = torch.Generator().manual_seed(seed)
    layers = {
        "lora_unet_input_blocks_1_1_proj_in": (320, 320, (1, 1)),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": (320, 768, ()),
        "lora_unet_middle_block_0_in_layers_2": (640, 640, (3, 3)),
        "lora_unet_output_blocks_3_1_proj_out": (320, 320, (1, 1)),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768, ()),
        "lora_te_text_model_encoder_layers_0_mlp_fc1": (3072, 768, ()),
    }
    out = {}
    for name, (rows, cols, kernel) in layers.items():
        up = torch.randn(rows, rank, *([1] * len(kernel)), generator=generator) * 0.05
        down = torch.randn(rank, cols, *kernel, generator=generator) * 0.05
        out[f"{name}.lora_up.weight"] = up.half()
        out[f"{name}.lora_down.weight"] = down.half()
        out[f"{name}.alpha"] = torch.tensor(float(rank) / 2)
    return out


def hypernetwork_sd(seed: int = 23, widths: tuple[int, ...] = (320, 768), layer_norm: bool = False,
                    activation: str = "relu") -> dict:
    """A hypernetwork in the A1111 ``.pt`` layout: per width, two MLPs (width -> 2*width -> width)."""
    generator = torch.Generator().manual_seed(seed)
    out: dict = {"activation_func": activation, "is_layer_norm": layer_norm, "use_dropout": False,
                 "activate_output": False, "last_layer_dropout": False, "layer_structure": [1, 2, 1]}
    for width in widths:
        pair = []
        for _ in range(2):
            mlp, index = {}, 0
            for rows, cols in ((2 * width, width), (width, 2 * width)):
                mlp[f"linear.{index}.weight"] = torch.randn(rows, cols, generator=generator) * 0.05
                mlp[f"linear.{index}.bias"] = torch.randn(rows, generator=generator) * 0.05
                index += 1
                if layer_norm:
                    mlp[f"linear.{index}.weight"] = 1 + torch.randn(rows, generator=generator) * 0.05
                    mlp[f"linear.{index}.bias"] = torch.randn(rows, generator=generator) * 0.05
                    index += 1
            pair.append(mlp)
        out[width] = pair
    return out
