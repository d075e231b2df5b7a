"""LTX-Video 0.9 as a supported model (ComfyUI's ``LTXV``): flow sampling with Flux's shift of 2.37 over
128-channel video latents.

Frames the noise mask keeps (LTXVImgToVideo's start image, LTXVAddGuide's
guides) get their own timestep: the mask times sigma, per token. The
checkpoint's ``config`` metadata may set the transformer's position settings
(causal frame positions in the later releases); files without it run as
ComfyUI runs them then.
"""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.latent_formats import LatentFormat
from ...model.quant import network_weights
from .detect import TRANSFORMER_SETTINGS, file_config
from .transformer import LTXVConfig, LTXVTransformer

SUPPORTED = (torch.bfloat16, torch.float32)


class LTXVLatent(LatentFormat):
    """The video VAE's latents: 128 channels, 3-d, used as they are (the VAE normalises them)."""

    latent_channels = 128
    latent_dimensions = 3
    spacial_downscale_ratio = 32


class LTXVModel(BaseModel):
    """Text states and their token mask, the frame rate, the noise mask and guide positions as network inputs."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            out["attention_mask"] = C.CONDRegular(mask)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        out["frame_rate"] = C.CONDConstant(kwargs.get("frame_rate", 25))
        denoise_mask = kwargs.get("concat_mask", kwargs.get("denoise_mask"))
        if denoise_mask is not None:
            out["denoise_mask"] = C.CONDRegular(denoise_mask)
        keyframes = kwargs.get("keyframe_idxs")
        if keyframes is not None:
            out["keyframe_idxs"] = C.CONDRegular(keyframes)
            entries = kwargs.get("guide_attention_entries")
            if entries:
                out["guide_attention_entries"] = C.CONDConstant(entries)
        return out

    def process_timestep(self, timestep: torch.Tensor, x: torch.Tensor | None = None,
                         denoise_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """[B], or per token [B, N] where a noise mask keeps some frames."""
        if denoise_mask is None:
            return timestep
        first = denoise_mask[:, :1]
        return (first * timestep.view([timestep.shape[0]] + [1] * (first.ndim - 1))).flatten(1)

    def scale_latent_inpaint(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                             latent_image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return latent_image


class LTXV(ModelConfig):
    """ComfyUI's ``LTXV``: flow matching (Flux's schedule, shift 2.37), the 0.9 video latents."""

    architecture = "ltxv"
    unet_config = {"image_model": "ltxv"}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"shift": 2.37}
    latent_format = LTXVLatent
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "ltxv"
    clip_type = "ltxv"

    def __init__(self, unet_config: dict[str, Any]) -> None:
        super().__init__(unet_config)
        self.memory_usage_factor = self.unet_config.get("cross_attention_dim", 2048) / 2048 * 5.5

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLUX

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return LTXVModel(self, ModelType.FLUX, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        settings = file_config(path).get("transformer", {})
        self.unet_config.update({k: settings[k] for k in TRANSFORMER_SETTINGS if k in settings})
        layout = LTXVConfig.from_unet_config(self.unet_config)
        weights = network_weights(path, prefix, shapes, "LTX-Video transformer", "unet",
                                  lambda ops, compute: LTXVTransformer(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        return None


CONFIGS = [LTXV]
