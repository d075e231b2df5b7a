"""Lumina-Image 2.0 and Z-Image as supported models (ComfyUI's ``Lumina2`` and ``ZImage``)."""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.quant import network_weights
from .nextdit import NextDiT, NextDiTConfig

SUPPORTED = (torch.bfloat16, torch.float32)


class Lumina2Model(BaseModel):
    """Text conditioning as-is, with the prompt's token count (and its mask when it has padding)."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            if torch.numel(mask) != mask.sum():
                out["attention_mask"] = C.CONDRegular(mask)
            out["num_tokens"] = C.CONDConstant(max(1, int(torch.sum(mask).item())))
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
            if "num_tokens" not in out:
                out["num_tokens"] = C.CONDConstant(cross_attn.shape[1])
        return out


def layout(config: dict[str, Any]) -> NextDiTConfig:
    fields = NextDiTConfig.__dataclass_fields__
    return NextDiTConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in fields})


class Lumina2(ModelConfig):
    """Lumina-Image 2.0: flow matching (multiplier 1, shift 6), Flux latents, bf16/fp32 only."""

    architecture = "lumina2"
    unet_config = {"image_model": "lumina2", "dim": 2304}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"multiplier": 1.0, "shift": 6.0}
    memory_usage_factor = 1.4
    latent_format = latent_formats.Flux
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "lumina2"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def lora_keys(self, model_keys: set[str], key_map: dict[str, Any]) -> None:
        """LoRA names in diffusers' layout (``diffusion_model.``/``transformer.``/LyCORIS), as ComfyUI maps
        them: ``to_q``/``to_k``/``to_v`` are slices of the fused ``qkv``, ``to_out.0`` is ``out``. The key
        and value slices follow the model's key-value heads."""
        dim = self.unet_config["dim"]
        heads = self.unet_config["n_heads"]
        kv = dim // heads * (self.unet_config.get("n_kv_heads") or heads)
        for key in model_keys:
            if not (key.startswith("diffusion_model.") and key.endswith(".weight")):
                continue
            name = key[len("diffusion_model."):-len(".weight")]
            if name.endswith(".attention.qkv"):
                block = name[:-len("qkv")]
                parts = (("to_q", (0, 0, dim)), ("to_k", (0, dim, kv)), ("to_v", (0, dim + kv, kv)))
                names = [(block + proj, (key, part)) for proj, part in parts]
            elif name.endswith(".attention.out"):
                names = [(name[:-len("out")] + "to_out.0", key)]
            else:
                names = [(name, key)]
            for diffusers, target in names:
                for alias in (f"diffusion_model.{diffusers}", f"transformer.{diffusers}",
                              "lycoris_" + diffusers.replace(".", "_")):
                    key_map.setdefault(alias, target)

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return Lumina2Model(self, ModelType.FLOW, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        net = layout(self.unet_config)
        weights = network_weights(path, prefix, shapes, f"{type(self).__name__} transformer", "unet",
                                  lambda ops, compute: NextDiT(net, ops, compute), weight_dtype=weight_dtype,
                                  supported=SUPPORTED)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        """The checkpoint's Qwen3 4B (Z-Image) or Gemma 2 2B (Lumina 2) under ``text_encoders.``, or None."""
        from .detect import gemma2_2b_prefix, qwen3_4b_prefix
        from .gemma import gemma_clip
        from .text import z_image_clip

        encoders = {k: v for k, v in shapes.items() if k.startswith("text_encoders.")}
        prefix = qwen3_4b_prefix(encoders)
        if prefix is not None:
            return z_image_clip(path, prefix, shapes)
        prefix = gemma2_2b_prefix(encoders)
        return None if prefix is None else gemma_clip(path, prefix, shapes, embedding_directory)


class ZImage(Lumina2):
    """Z-Image (Turbo and base): shift 3."""

    unet_config = {"image_model": "lumina2", "dim": 3840}
    sampling_settings = {"multiplier": 1.0, "shift": 3.0}
    memory_usage_factor = 2.8
    family = "z_image"
