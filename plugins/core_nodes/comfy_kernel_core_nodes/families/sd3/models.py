"""SD3 / SD3.5 (ComfyUI's ``SD3`` supported model) and its MODEL: flow matching with shift 3."""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats
from ...model.base import BaseModel, ModelType
from ...model.detection import ModelConfig, Shapes
from ...model.dit import dit_weights
from .mmdit import MMDiT, MMDiTParams


def mmdit_params(config: dict[str, Any]) -> MMDiTParams:
    context = config.get("context_embedder_config")
    return MMDiTParams(
        in_channels=config["in_channels"], out_channels=config.get("out_channels", config["in_channels"]),
        patch_size=config["patch_size"], depth=config["depth"], adm_in_channels=config.get("adm_in_channels"),
        context_in=context["params"]["in_features"] if context else None,
        pos_embed_max_size=config.get("pos_embed_max_size"), qk_norm=config.get("qk_norm"),
        qkv_bias=config.get("qkv_bias", True),
        x_block_self_attn_layers=tuple(config.get("x_block_self_attn_layers", ())))


class SD3Model(BaseModel):
    """The pooled CLIP-L + CLIP-G vector as ``y``; the context (CLIP-L/G padded to 4096, then T5) unbatched."""

    def __init__(self, model_config: Any, model_type: ModelType = ModelType.FLOW, weights: Any = None,
                 device: Any = None) -> None:
        super().__init__(model_config, model_type, weights, device)

    def encode_adm(self, **kwargs: Any) -> torch.Tensor | None:
        return kwargs.get("pooled_output")

    def extra_conds(self, **kwargs: Any) -> dict[str, C.CONDRegular]:
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        return out


class SD3Config(ModelConfig):
    """SD3 Medium, SD3.5 Medium and SD3.5 Large (and fine-tunes): 16 latent channels."""

    architecture = "mmdit"
    family = "sd3"
    clip_type = "sd3"
    unet_config = {"in_channels": 16, "pos_embed_scaling_factor": None}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"shift": 3.0}
    latent_format = latent_formats.SD3
    memory_usage_factor = 1.2
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]
    vae_key_prefix = ["first_stage_model."]
    text_encoder_key_prefix = ["text_encoders."]

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def inpaint_model(self) -> bool:
        return False

    def network(self) -> Any:
        params = mmdit_params(self.unet_config)
        return lambda operations, compute: MMDiT(params, operations, compute)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        weights = dit_weights(path, prefix, shapes, self.network(), "MMDiT", weight_dtype)
        return SD3Model(self, ModelType.FLOW, weights)

    def lora_keys(self, model_keys: set[str], key_map: dict[str, Any]) -> dict[str, Any]:
        """SD3's diffusers-layout LoRA names (see lora.py)."""
        from .lora import lora_keys

        return lora_keys(self.unet_config, model_keys, key_map)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .text import sd3_clip_from_checkpoint

        return sd3_clip_from_checkpoint(path, shapes, embedding_directory)
