"""Qwen-Image and Qwen-Image-Edit as supported models: detection config, MODEL and the checkpoint's parts."""

from __future__ import annotations

import math
from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.quant import network_weights
from .transformer import QwenImageConfig, QwenImageTransformer

SUPPORTED = (torch.bfloat16, torch.float32)


class QwenImageModel(BaseModel):
    """Text conditioning as-is (CONDRegular) and reference latents for the Edit models."""

    def __init__(self, model_config: Any, model_type: ModelType = ModelType.FLOW,
                 weights: WeightsSource | None = None, device: Any = None) -> None:
        super().__init__(model_config, model_type, weights, device)
        self.memory_usage_factor_conds = ("ref_latents",)

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        refs = kwargs.get("reference_latents")
        if refs is not None:
            out["ref_latents"] = C.CONDList([self.process_latent_in(r) for r in refs])
            method = kwargs.get("reference_latents_method")
            if method is not None:
                out["ref_latents_method"] = C.CONDConstant(method)
        return out

    def extra_conds_shapes(self, **kwargs: Any) -> dict[str, list[int]]:
        refs = kwargs.get("reference_latents")
        if refs is None:
            return {}
        return {"ref_latents": [1, 16, sum(math.prod(r.shape) for r in refs) // 16]}


def transformer_layout(config: dict[str, Any]) -> QwenImageConfig:
    heads = config.get("inner_dim", 3072) // 128
    return QwenImageConfig(in_channels=config["in_channels"], out_channels=config.get("out_channels", 16),
                           num_layers=config["num_layers"], num_attention_heads=heads,
                           joint_attention_dim=config.get("joint_attention_dim", 3584),
                           default_ref_method=config.get("default_ref_method", "index"))


class QwenImage(ModelConfig):
    """ComfyUI's ``QwenImage``: flow matching (multiplier 1, shift 1.15), Wan 2.1 latents, bf16/fp32 only."""

    architecture = "qwen_image"
    unet_config = {"image_model": "qwen_image"}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"multiplier": 1.0, "shift": 1.15}
    memory_usage_factor = 1.8
    latent_format = latent_formats.Wan21
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "qwen_image"
    clip_type = "qwen_image"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def lora_keys(self, model_keys: set[str], key_map: dict[str, Any]) -> None:
        """LoRA names besides ``diffusion_model.<layer>``: the bare diffusers name (Qwen-Image-Lightning),
        ``transformer.<layer>`` and the LyCORIS spelling, as ComfyUI maps them."""
        for key in model_keys:
            if key.startswith("diffusion_model.") and key.endswith(".weight"):
                name = key[len("diffusion_model."):-len(".weight")]
                for alias in (name, f"transformer.{name}", "lycoris_" + name.replace(".", "_")):
                    key_map.setdefault(alias, key)

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return QwenImageModel(self, ModelType.FLOW, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        layout = transformer_layout(self.unet_config)

        def drop_markers(key: str) -> str | None:
            return None if key.startswith("__") else key

        weights = network_weights(path, prefix, shapes, "Qwen-Image transformer", "unet",
                                  lambda ops, compute: QwenImageTransformer(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED, rename=drop_markers)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .detect import qwen25_7b_prefix
        from .text import qwen_image_clip

        prefix = qwen25_7b_prefix({k: v for k, v in shapes.items() if k.startswith("text_encoders.")})
        return None if prefix is None else qwen_image_clip(path, prefix, shapes)
