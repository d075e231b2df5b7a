"""LTX-2 as a supported model (ComfyUI's ``LTXAV``): flow sampling over an audio + video latent.

The sampler sees the two latents packed into one tensor (``model/nested.py``)
and the model gets their shapes as the ``latent_shapes`` condition. Frames the
noise mask keeps (the start image of LTXVImgToVideoInplace, guide frames of
LTXVAddGuide) get their own timestep: the mask times sigma, per token, for
each stream.
"""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.latent_formats import LatentFormat
from ...model.nested import unpack_latents
from ...model.quant import network_weights
from .transformer import LTX2Config, LTX2Transformer

SUPPORTED = (torch.bfloat16, torch.float32)


class LTX2Video(LatentFormat):
    """The video VAE's latents: 128 channels, 3-d, used as they are (the VAE normalises them)."""

    latent_channels = 128
    latent_dimensions = 3
    spacial_downscale_ratio = 32


class LTX2Audio(LatentFormat):
    """The audio VAE's latents: 8 channels x 16 mel bins per frame, used as they are."""

    latent_channels = 8
    latent_dimensions = 2


class LTX2Model(BaseModel):
    """Text states, frame rate, per-stream noise masks, guide-frame positions and LTXVReferenceAudio's tokens as
    network inputs."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            out["attention_mask"] = C.CONDRegular(mask)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        if kwargs.get("unprocessed_ltxav_embeds"):
            out["unprocessed_ltxav_embeds"] = C.CONDConstant(True)
        out["frame_rate"] = C.CONDConstant(kwargs.get("frame_rate", 25))
        shapes = kwargs.get("latent_shapes")
        denoise_mask = kwargs.get("concat_mask", kwargs.get("denoise_mask"))
        if denoise_mask is not None and shapes:
            masks = unpack_latents(denoise_mask, shapes)
            denoise_mask = masks[0]
            if len(masks) > 1:
                out["audio_denoise_mask"] = C.CONDRegular(masks[1])
        if denoise_mask is not None:
            out["denoise_mask"] = C.CONDRegular(denoise_mask)
        keyframes = kwargs.get("keyframe_idxs")
        if keyframes is not None:
            out["keyframe_idxs"] = C.CONDRegular(keyframes)
            entries = kwargs.get("guide_attention_entries")
            if entries:
                out["guide_attention_entries"] = C.CONDConstant(entries)
        if shapes is not None:
            out["latent_shapes"] = C.CONDConstant([tuple(s) for s in shapes])
        ref_audio = kwargs.get("ref_audio")
        if ref_audio is not None:
            out["ref_audio"] = C.CONDConstant(ref_audio)
        return out

    def process_timestep(self, timestep: torch.Tensor, x: torch.Tensor | None = None,
                         denoise_mask: torch.Tensor | None = None, audio_denoise_mask: torch.Tensor | None = None,
                         **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(video, audio) timesteps: [B], or per token where a noise mask keeps some frames."""
        def per_token(mask: torch.Tensor | None) -> torch.Tensor:
            if mask is None:
                return timestep
            first = mask[:, :1] if mask.ndim == 5 else mask[:, :1, :, :1]
            return (first * timestep.view([timestep.shape[0]] + [1] * (first.ndim - 1))).flatten(1)

        return per_token(denoise_mask), per_token(audio_denoise_mask)

    def scale_latent_inpaint(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                             latent_image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return latent_image


class LTX2(ModelConfig):
    """ComfyUI's ``LTXAV`` (LTX-Video's settings): flow matching with Flux's shift of 2.37, 128-channel video
    latents beside 8 x 16 audio latents."""

    architecture = "ltxav"
    unet_config = {"image_model": "ltxav"}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"shift": 2.37}
    latent_format = LTX2Video
    memory_usage_factor = 0.077
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "ltx2"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLUX

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return LTX2Model(self, ModelType.FLUX, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        from .audio_vae import file_config

        # like ComfyUI, the rotary layout comes from the file's ``config`` metadata (interleaved without one)
        rope = file_config(path).get("transformer", {}).get("rope_type", "interleaved")
        layout = LTX2Config.from_unet_config({**self.unet_config, "rope_type": rope})
        own_connectors = bool(layout.connector_layers)
        weights = network_weights(path, prefix, shapes, "LTX-2 transformer", "unet",
                                  lambda ops, compute: LTX2Transformer(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED,
                                  rename=lambda key: _transformer_key(key, own_connectors))
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        return None


def _transformer_key(key: str, own_connectors: bool) -> str | None:
    """The network's keys; LTX-2's text connectors, kept beside the transformer, belong to the text encoder
    (LTX-2.3's run in the diffusion model)."""
    return None if "embeddings_connector." in key and not own_connectors else key


CONFIGS = [LTX2]
