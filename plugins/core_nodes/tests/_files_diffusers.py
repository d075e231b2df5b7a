"""Diffusers pipeline folders made by diffusers itself from single-file (LDM layout) checkpoints.

diffusers is the oracle of the folder layout: its own single-file conversion
(``diffusers.loaders.single_file_utils``) renames the checkpoint's UNet, VAE and
text encoder, its model classes load the result strictly (so every tensor is
placed) and ``save_pretrained`` writes the folders. A loader that reads the folder
must therefore give the same networks as the checkpoint it came from.

The folders are cached under ``.cache/checkpoints/families`` (VERSION in the name:
change it when a recipe changes).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from _random_weights import FAMILY_CACHE, cached_file, module_shapes, random_state_dict

VERSION = 1

UNET_SD15_TINY = {"block_out_channels": (320, 640), "layers_per_block": 1,
                  "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                  "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 768,
                  "attention_head_dim": 8}
#: SD2's widths with one 320-wide block per level: twelve output blocks, so output block 11 (whose norm
#: bias tells the v-prediction models apart) exists, at a tenth of the full UNet's size
UNET_SD2_SMALL = {"block_out_channels": (320,) * 4, "layers_per_block": 2,
                  "down_block_types": ("CrossAttnDownBlock2D",) + ("DownBlock2D",) * 3,
                  "up_block_types": ("UpBlock2D",) * 3 + ("CrossAttnUpBlock2D",), "cross_attention_dim": 1024,
                  "attention_head_dim": 5, "use_linear_projection": True}
SD2_LAYOUT = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": (1, 1, 1, 1),
              "num_res_blocks": (2, 2, 2, 2), "transformer_depth": (1, 1, 0, 0, 0, 0, 0, 0),
              "transformer_depth_output": (1, 1, 1) + (0,) * 9, "transformer_depth_middle": 1,
              "context_dim": 1024, "use_linear_in_transformer": True, "adm_in_channels": None,
              "num_heads": -1, "num_head_channels": 64}
SDXL_UNET = {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             "block_out_channels": (320, 640, 1280), "layers_per_block": 2,
             "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
             "cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time",
             "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}
SD_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
          "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768, "vocab_size": 49408}
CLIP_H_23 = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
             "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512, "vocab_size": 49408}


def _part(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if k.startswith(prefix)}


def _unet(ldm: dict[str, torch.Tensor], config: dict[str, Any]) -> Any:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = UNet2DConditionModel(**config)
    converted = convert_ldm_unet_checkpoint(_part(ldm, "model.diffusion_model."), unet.config)
    unet.load_state_dict(converted, strict=True)
    return unet.half()


def _vae(ldm: dict[str, torch.Tensor]) -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = AutoencoderKL(**SD_VAE)
    vae.load_state_dict(convert_ldm_vae_checkpoint(_part(ldm, "first_stage_model."), vae.config), strict=True)
    return vae.half()


def _clip(state: dict[str, torch.Tensor], config: dict[str, Any]) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig(**config))
    if not any(k.startswith("text_model.") for k in model.state_dict()):  # transformers 5 drops the level
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing[:3], unexpected[:3])
    return model.half()


def _save(target: Path, parts: dict[str, tuple[Any, dict[str, Any]]], pipeline: str) -> Path:
    """Each part's ``save_pretrained(**options)`` into ``target/<part>``, and a model_index.json."""
    if target.is_dir():
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    index = {"_class_name": pipeline, "_diffusers_version": "0.35.0"}
    for name, (model, options) in parts.items():
        model.save_pretrained(str(partial / name), **options)
        library = "transformers" if name.startswith("text_encoder") else "diffusers"
        index[name] = [library, type(model).__name__]
    (partial / "model_index.json").write_text(json.dumps(index, indent=2))
    try:
        os.replace(partial, target)
    except OSError:  # another test process wrote the folder first
        if not target.is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return target


def sd15_folder(checkpoint: Path) -> Path:
    """The tiny SD1.5 checkpoint as a diffusers folder: the UNet in shards, the text encoder as the fp16
    variant (``model.fp16.safetensors``), the VAE as one file."""
    from comfy_kernel_core_nodes.model.files import read_state_dict

    target = FAMILY_CACHE / f"v{VERSION}-diffusers-sd15-tiny"
    if target.is_dir():
        return target
    ldm = read_state_dict(checkpoint)
    text = {k[len("cond_stage_model.transformer."):]: v for k, v in ldm.items()
            if k.startswith("cond_stage_model.transformer.")}
    parts = {"unet": (_unet(ldm, UNET_SD15_TINY), {"max_shard_size": "60MB"}),
             "text_encoder": (_clip(text, CLIP_L), {"variant": "fp16"}),
             "vae": (_vae(ldm), {})}
    return _save(target, parts, "StableDiffusionPipeline")


def sd2_checkpoint(v_prediction: bool) -> Path:
    """A single-file SD2 checkpoint (the small UNet above, OpenCLIP-H in OpenCLIP's names, the SD VAE);
    the v-prediction one has output block 11's norm bias spread as the 768-v models' is."""
    from test_family_sd2 import _openclip_h_shapes

    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL
    from comfy_kernel_core_nodes.families.sd.models import unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel

    def make() -> dict[str, torch.Tensor]:
        with torch.device("meta"):
            unet, vae = UNetModel(unet_layout(SD2_LAYOUT)), AutoencoderKL()
        shapes = {**module_shapes(unet, "model.diffusion_model."), **module_shapes(vae, "first_stage_model.")}
        shapes.update({"cond_stage_model.model." + k: v for k, v in _openclip_h_shapes().items()})
        tensors = random_state_dict(shapes)
        tensors["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052)
        key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
        assert key in tensors
        if v_prediction:
            tensors[key] = 0.2 * torch.randn(320, generator=torch.Generator().manual_seed(3)).half()
        return tensors

    return cached_file(f"v{VERSION}-diffusers-sd2-small{'-v' if v_prediction else ''}-checkpoint.safetensors", make)


def sd2_folder(checkpoint: Path, name: str) -> Path:
    """An SD2-layout checkpoint (UNet, OpenCLIP-H in OpenCLIP's names, VAE) as a diffusers folder.

    The text encoder goes through diffusers' OpenCLIP conversion, which (as in the released
    SD2 folders) keeps 23 of the 24 layers.
    """
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    from comfy_kernel_core_nodes.model.files import read_state_dict

    target = FAMILY_CACHE / f"v{VERSION}-diffusers-{name}"
    if target.is_dir():
        return target
    ldm = read_state_dict(checkpoint)
    state = convert_open_clip_checkpoint(CLIPTextModel(CLIPTextConfig(**CLIP_H_23)), ldm)
    text = _clip({k: v for k, v in state.items() if not k.startswith("text_projection")}, CLIP_H_23)
    parts = {"unet": (_unet(ldm, UNET_SD2_SMALL), {}), "text_encoder": (text, {}),
             "vae": (_vae(ldm), {"variant": "fp16"})}
    return _save(target, parts, "StableDiffusionPipeline")


#: Flux.1 dev's transformer reduced to 2 heads of 128 and one block of each kind (detection reads both)
FLUX_TRANSFORMER = {"patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 1,
                    "attention_head_dim": 128, "num_attention_heads": 2, "joint_attention_dim": 256,
                    "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": (16, 56, 56)}
T5_SMALL = {"vocab_size": 32128, "d_model": 256, "d_kv": 64, "d_ff": 512, "num_layers": 2, "num_heads": 4,
            "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False}
FLUX_VAE = {**SD_VAE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}


def flux_folder() -> Path:
    """A Flux.1 dev pipeline folder of random weights, every part made and saved by diffusers / transformers:
    transformer/ (one file), text_encoder/ (CLIP-L), text_encoder_2/ (a small T5 in shards), vae/ (16 channels)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    target = FAMILY_CACHE / f"v{VERSION}-diffusers-flux-small"
    if target.is_dir():
        return target
    torch.manual_seed(0)
    parts = {"transformer": (FluxTransformer2DModel(**FLUX_TRANSFORMER).to(torch.bfloat16), {}),
             "text_encoder": (CLIPTextModel(CLIPTextConfig(**CLIP_L)).half(), {}),
             "text_encoder_2": (T5EncoderModel(T5Config(**T5_SMALL)).half(), {"max_shard_size": "10MB"}),
             "vae": (AutoencoderKL(**FLUX_VAE), {})}
    return _save(target, parts, "FluxPipeline")


#: SD3 Medium's MMDiT at depth 3 (3 heads of 64), as tests/_sd3.py reduces it
SD3_TRANSFORMER = {"sample_size": 8, "patch_size": 2, "in_channels": 16, "num_layers": 3, "attention_head_dim": 64,
                   "num_attention_heads": 3, "joint_attention_dim": 4096, "caption_projection_dim": 192,
                   "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 16}
T5_XXL_WIDTH_SMALL = {**T5_SMALL, "d_model": 4096, "d_kv": 64, "num_heads": 1, "d_ff": 64, "num_layers": 1}


def sd3_folder() -> Path:
    """An SD3 pipeline folder: the transformer, CLIP-L with its projection (text_encoder/), a one-layer T5 at
    T5-XXL's width (text_encoder_3/) and the 16-channel VAE. CLIP-G (text_encoder_2/) is left out: its
    detection needs the full 1.4 GB tower, and the sd3 CLIP type takes any of the three encoders."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    target = FAMILY_CACHE / f"v{VERSION}-diffusers-sd3-small"
    if target.is_dir():
        return target
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(**SD3_TRANSFORMER)
    for module in transformer.modules():  # diffusers zero-initialises the output layers: give them values
        if isinstance(module, torch.nn.Linear) and not module.weight.abs().sum():
            torch.nn.init.normal_(module.weight, std=0.02)
    parts = {"transformer": (transformer.half(), {}),
             "text_encoder": (CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)).half(), {}),
             "text_encoder_3": (T5EncoderModel(T5Config(**T5_XXL_WIDTH_SMALL)).half(), {}),
             "vae": (AutoencoderKL(**FLUX_VAE), {})}
    return _save(target, parts, "StableDiffusion3Pipeline")
