"""ACE-Step 1.0 as a supported model: detection config, MODEL and the checkpoint's parts.

ComfyUI's ``ACEStep``: flow matching (shift 3), 8-channel latents of 16 mel
bands ([B, 8, 16, frames], 44 100 / 512 / 8 frames a second), bf16 or fp32.
The conditioning entry carries the tags' umt5-base states (``cross_attn``)
and the lyrics' token ids (``conditioning_lyrics``); the speaker embedding is
always zeros, as in ComfyUI, and ``lyrics_strength`` scales the lyrics'
contribution (TextEncodeAceStepAudio sets it).
"""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.quant import network_weights
from .transformer import AceStepV1Transformer, config_from_shapes, is_ace_v1_transformer

SUPPORTED = (torch.bfloat16, torch.float32)
SPEAKER_WIDTH = 512


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of an ACE-Step 1.0 file (``audio_model`` "ace")."""
    return {"audio_model": "ace"} if is_ace_v1_transformer(shapes, prefix) else None


class Network(AceStepV1Transformer):
    """The transformer as the sampler calls it (``context`` = the tags' states, the rest by name)."""

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | None = None,  # type: ignore[override]
                control: Any = None, transformer_options: Any = None, lyric_token_idx: torch.Tensor | None = None,
                speaker_embeds: torch.Tensor | None = None, lyrics_strength: float = 1.0,
                **kwargs: Any) -> torch.Tensor:
        return super().forward(x, timestep, context, lyric_token_idx, speaker_embeds=speaker_embeds,
                               lyrics_strength=lyrics_strength)


class AceStepV1Model(BaseModel):
    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        noise = kwargs["noise"]
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
            out["lyric_token_idx"] = C.CONDRegular(kwargs.get("conditioning_lyrics"))
        out["speaker_embeds"] = C.CONDRegular(torch.zeros(noise.shape[0], SPEAKER_WIDTH, device=noise.device,
                                                          dtype=noise.dtype))
        out["lyrics_strength"] = C.CONDConstant(kwargs.get("lyrics_strength", 1.0))
        return out


class AceStepV1Config(ModelConfig):
    architecture = "ace_step_v1"
    unet_config = {"audio_model": "ace"}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"shift": 3.0}
    latent_format = latent_formats.ACEAudio
    memory_usage_factor = 0.5
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "ace_step_v1"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return AceStepV1Model(self, ModelType.FLOW, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        local = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
        layout = config_from_shapes(local)
        weights = network_weights(path, prefix, shapes, "ACE-Step 1.0 DiT", "unet",
                                  lambda ops, compute: Network(layout, ops, compute), weight_dtype=weight_dtype,
                                  supported=SUPPORTED)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        """The checkpoint's umt5-base (``text_encoders.umt5base``) with the lyrics tokenizer."""
        from .text import ace_v1_clip, ace_v1_text_prefix

        prefix = ace_v1_text_prefix(shapes)
        return ace_v1_clip(path, prefix, shapes) if prefix is not None else None


CONFIGS = [AceStepV1Config]
