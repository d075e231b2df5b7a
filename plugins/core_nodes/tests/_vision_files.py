"""Random-weight CLIP vision, style model and GLIGEN files in their real key layouts (seeded, reproducible).

The ViT-L/14 image encoder is full size (304 M parameters, about 600 MB in
fp16); :func:`vit_l_file` writes it once into the repository's ``.cache`` (as
:func:`_random_weights.cached_file` does every generated file) and every module
hard-links it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _random_weights import cached_file, link, random_state_dict  # noqa: E402,F401  (link: for the test modules)

#: in the cached files' names; change it when a recipe changes
VERSION = "v1"


def clip_vision_sd(name: str = "vit_l", seed: int = 11) -> dict[str, torch.Tensor]:
    """A ViT in ComfyUI's (Hugging Face) names."""
    from comfy_kernel_core_nodes.components import clip_vision as cv

    config = {"vit_l": cv.VIT_L, "vit_h": cv.VIT_H, "vit_bigg": cv.VIT_G}[name]
    with torch.device("meta"):
        net = cv.CLIPVisionModel(config)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    sd = random_state_dict(shapes, seed=seed)
    sd["vision_model.embeddings.class_embedding"] = sd["vision_model.embeddings.class_embedding"] * 0.1
    return sd


def vit_shapes(name: str) -> dict[str, tuple[int, ...]]:
    from comfy_kernel_core_nodes.components import clip_vision as cv

    config = {"vit_l": cv.VIT_L, "vit_h": cv.VIT_H, "vit_bigg": cv.VIT_G, "vit_l_336": cv.VIT_L_336}[name]
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in cv.CLIPVisionModel(config).state_dict().items()}


def to_openclip(sd: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """The same ViT in OpenCLIP's visual-tower names (fused q/k/v, transposed projection)."""
    from comfy_kernel_core_nodes.components.clip_vision import _BLOCK, _OPENCLIP

    out: dict[str, torch.Tensor] = {}
    inverse = {v: k for k, v in _OPENCLIP.items()}
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in sd.items():
        if key in inverse:
            out[prefix + inverse[key]] = tensor
        elif key == "visual_projection.weight":
            out[prefix + "proj"] = tensor.transpose(0, 1).contiguous()
        elif key.startswith("vision_model.encoder.layers."):
            index, rest = key[len("vision_model.encoder.layers."):].split(".", 1)
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                layers.setdefault(f"{index}.{rest.split('.')[-1]}", {})[rest.split(".")[1]] = tensor
                continue
            for old, new in _BLOCK.items():
                if rest.startswith(new + "."):
                    out[f"{prefix}transformer.resblocks.{index}.{old}{rest[len(new):]}"] = tensor
    for key, parts in layers.items():
        index, kind = key.split(".")
        out[f"{prefix}transformer.resblocks.{index}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out


def style_model_sd(seed: int = 13) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.components.t2i_adapter import StyleAdapter

    with torch.device("meta"):
        net = StyleAdapter(width=1024, context_dim=768, num_head=8, n_layes=3, num_token=8)
    sd = random_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items()}, seed=seed)
    sd["style_embedding"] = sd["style_embedding"] * 0.05
    sd["proj"] = sd["proj"] * 0.1
    return sd


#: The tiny UNet's transformer blocks (input 1, middle, output 2 and 3), where a GLIGEN file keeps its fusers.
TINY_TRANSFORMERS = (("input_blocks.1.1", 320), ("middle_block.1", 640), ("output_blocks.2.1", 320),
                     ("output_blocks.3.1", 320))


def gligen_sd(seed: int = 17, gate: float = 0.5, prefix: str = "") -> dict[str, torch.Tensor]:
    """A GLIGEN file for the tiny layout: one fuser per transformer block, the position net, open gates."""
    from comfy_kernel_core_nodes.components.gligen import GatedSelfAttentionDense, PositionNet

    shapes: dict[str, tuple[int, ...]] = {}
    with torch.device("meta"):
        for block, width in TINY_TRANSFORMERS:
            fuser = GatedSelfAttentionDense(width, 768, 8)
            for k, v in fuser.state_dict().items():
                shapes[f"{prefix}{block}.transformer_blocks.0.fuser.{k}"] = tuple(v.shape)
        for k, v in PositionNet(768, 768).state_dict().items():
            shapes[f"position_net.{k}"] = tuple(v.shape)
    sd = random_state_dict(shapes, seed=seed)
    for key in sd:
        if key.endswith(("alpha_attn", "alpha_dense")):
            sd[key] = torch.tensor(gate, dtype=sd[key].dtype)
    return sd


def vit_l_file() -> Path:
    """The random-weight CLIP ViT-L/14 vision file, written once into the shared cache."""
    return cached_file(f"{VERSION}-clip_vision_vit_l.safetensors", lambda: clip_vision_sd("vit_l"))


def unclip_file(tiny_checkpoint: Path) -> Path:
    """The tiny unCLIP checkpoint built on ``tiny_checkpoint`` and the ViT-L file, written once."""
    from safetensors.torch import load_file

    return cached_file(f"{VERSION}-unclip_l_tiny.safetensors",
                       lambda: unclip_checkpoint_sd(tiny_checkpoint, load_file(str(vit_l_file()))))


def unclip_checkpoint_sd(tiny_checkpoint: Path, vit_l: dict[str, torch.Tensor],
                         seed: int = 19) -> dict[str, torch.Tensor]:
    """An SD2.1 unCLIP-L checkpoint on the tiny UNet layout: UNet (context 1024, ADM 1536), the tiny VAE and a
    ViT-L vision tower under ``embedder.model.visual.`` (OpenCLIP names); no text encoder."""
    from safetensors import safe_open

    from comfy_kernel_core_nodes.families.sd.models import unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel

    config = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": (1, 2),
              "num_res_blocks": (1, 1), "transformer_depth": (1, 0), "transformer_depth_output": (0, 0, 1, 1),
              "transformer_depth_middle": 1, "context_dim": 1024, "use_linear_in_transformer": True,
              "adm_in_channels": 1536, "num_heads": -1, "num_head_channels": 64}
    with torch.device("meta"):
        unet = UNetModel(unet_layout(config))
    sd = {f"model.diffusion_model.{k}": v for k, v in random_state_dict(
        {k: tuple(v.shape) for k, v in unet.state_dict().items()}, seed=seed).items()}
    with safe_open(str(tiny_checkpoint), framework="pt") as f:
        for key in f.keys():
            if key.startswith("first_stage_model."):
                sd[key] = f.get_tensor(key)
    sd.update(to_openclip(vit_l, prefix="embedder.model.visual."))
    return sd
