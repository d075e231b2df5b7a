"""Writing models back to files in ComfyUI's checkpoint layout (CheckpointSave, ModelSave, ImageOnlyCheckpointSave).

A saved checkpoint holds the current weights, patches applied (merges,
LoRAs), under the original single-file names: ``model.diffusion_model.`` for
the UNet, ``first_stage_model.`` for the VAE, and each family's text encoder
layout (SD1.x ``cond_stage_model.transformer.text_model.``; SD2.x OpenCLIP-H
under ``cond_stage_model.model.``; SDXL CLIP-L under
``conditioner.embedders.0.transformer.`` and OpenCLIP-G under
``conditioner.embedders.1.model.``), so ComfyUI and this server load it back
as the same model. Metadata is ComfyUI's (``modelspec.*`` for SDXL, the
prediction type, the prompt and workflow unless ``--disable-metadata``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

#: OpenCLIP text-tower names of the Hugging Face ones (the inverse of families.sd.text_xl.hf_names).
_BLOCK = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
          "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def hf_text_to_openclip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A Hugging Face text tower (keys under ``prefix``) in OpenCLIP's names: q/k/v fused, projection transposed."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, list[torch.Tensor | None]] = {}
    for key, tensor in sd.items():
        if not key.startswith(prefix):
            continue
        local = key[len(prefix):]
        if local == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = tensor
        elif local == "embeddings.position_embedding.weight":
            out["positional_embedding"] = tensor
        elif local.startswith("final_layer_norm."):
            out["ln_final." + local[len("final_layer_norm."):]] = tensor
        elif local == "text_projection.weight":
            out["text_projection"] = tensor.transpose(0, 1).contiguous()
        elif local.startswith("encoder.layers."):
            index, rest = local[len("encoder.layers."):].split(".", 1)
            block = f"transformer.resblocks.{index}."
            parts = rest.split(".")
            if parts[0] == "self_attn" and parts[1] in ("q_proj", "k_proj", "v_proj"):
                slot = qkv.setdefault(f"{block}attn.in_proj_{parts[2]}", [None, None, None])
                slot[("q_proj", "k_proj", "v_proj").index(parts[1])] = tensor
                continue
            for hf, openclip in _BLOCK.items():
                if rest.startswith(hf + "."):
                    out[block + openclip + rest[len(hf):]] = tensor
    for key, parts in qkv.items():
        if any(p is None for p in parts):
            raise ValueError(f"{key}: one of q, k, v is missing")
        out[key] = torch.cat(parts, dim=0)
    return out


def _prefixed(sd: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    return {new + k[len(old):]: v for k, v in sd.items() if k.startswith(old)}


def clip_state_dict_for_saving(family: str, clip_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text encoders' model keys (``clip_l.transformer.text_model.*`` ...) in the family's checkpoint layout."""
    if family in ("sdxl", "sdxl_refiner"):
        out = _prefixed(clip_sd, "clip_l.transformer.", "conditioner.embedders.0.transformer.")
        if out:
            out["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = \
                torch.arange(77).expand((1, -1))
        g = hf_text_to_openclip(clip_sd, "clip_g.transformer.text_model.")
        embedder = "conditioner.embedders.1.model." if out else "conditioner.embedders.0.model."
        out.update({embedder + k: v for k, v in g.items()})
        return out
    if family.startswith(("sd2", "sd21")):
        h = hf_text_to_openclip(clip_sd, "clip_h.transformer.text_model.")
        return {"cond_stage_model.model." + k: v for k, v in h.items()}
    out = _prefixed(clip_sd, "clip_l.", "cond_stage_model.")
    if out:
        return out
    return {"cond_stage_model." + k: v for k, v in clip_sd.items()}


def state_dict_for_saving(model: Any, clip: Any = None, vae: Any = None, clip_vision: Any = None) -> dict:
    """Every tensor of a checkpoint of ``model`` (a ModelPatcher) with its CLIP, VAE and CLIP vision."""
    base = model.model
    config = base.model_config
    family = getattr(config, "family", "")
    sd = {"model.diffusion_model." + k[len("diffusion_model."):]: v
          for k, v in model.model_state_dict("diffusion_model.").items()}
    if getattr(config, "scaled_fp8", None) is not None:
        sd["model.diffusion_model.scaled_fp8"] = torch.tensor([], dtype=config.scaled_fp8)
    from .base import ModelType

    if base.model_type == ModelType.V_PREDICTION:
        sd["v_pred"] = torch.tensor([])
    if clip is not None:
        sd.update(clip_state_dict_for_saving(family, clip.get_sd()))
    if vae is not None:
        prefix = (getattr(config, "vae_key_prefix", None) or ["first_stage_model."])[0]
        sd.update({prefix + k: v for k, v in vae.get_sd().items()})
    if clip_vision is not None:
        prefix = getattr(config, "clip_vision_prefix", None) or ""
        sd.update({prefix + k: v for k, v in clip_vision.get_sd().items()})
    return sd


def checkpoint_metadata(model: Any, title: str, prompt: Any, extra_pnginfo: Any,
                        disable_metadata: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(safetensors metadata, extra tensors) ComfyUI writes for a saved checkpoint."""
    from . import model_sampling as ms
    from .base import ModelType

    base = model.model
    family = getattr(base.model_config, "family", "")
    metadata: dict[str, str] = {}
    architecture = {"sdxl": "stable-diffusion-xl-v1-base", "sdxl_refiner": "stable-diffusion-xl-v1-refiner"}.get(family)
    if architecture is not None:
        metadata["modelspec.architecture"] = architecture
        metadata["modelspec.sai_model_spec"] = "1.0.0"
        metadata["modelspec.implementation"] = "sgm"
        metadata["modelspec.title"] = title
    extra: dict[str, torch.Tensor] = {}
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, ms.ModelSamplingContinuousEDM) and isinstance(sampling, ms.V_PREDICTION):
        extra["edm_vpred.sigma_max"] = torch.tensor(float(sampling.sigma_max)).float()
        extra["edm_vpred.sigma_min"] = torch.tensor(float(sampling.sigma_min)).float()
    if base.model_type == ModelType.EPS:
        metadata["modelspec.predict_key"] = "epsilon"
    elif base.model_type == ModelType.V_PREDICTION:
        metadata["modelspec.predict_key"] = "v"
        extra["v_pred"] = torch.tensor([])
        if getattr(sampling, "zsnr", False):
            extra["ztsnr"] = torch.tensor([])
    if not disable_metadata:
        metadata["prompt"] = json.dumps(prompt) if prompt is not None else ""
        if isinstance(extra_pnginfo, dict):
            for key, value in extra_pnginfo.items():
                metadata[key] = json.dumps(value)
    return metadata, extra


def save_file(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None) -> None:
    """Write a .safetensors file (contiguous CPU tensors), replacing ``path`` only once it is complete."""
    from safetensors.torch import save_file as write

    out = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    partial = f"{path}.partial"
    write(out, partial, metadata=metadata)
    os.replace(partial, path)
