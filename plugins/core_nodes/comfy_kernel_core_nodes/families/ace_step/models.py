"""ACE-Step 1.5 as a supported model: detection config, MODEL and the checkpoint's parts.

The conditioning entry carries the caption states (``cross_attn``), the lyric
embeddings (``conditioning_lyrics``) and the language model's ``audio_codes``;
the timbre reference is the latent of silence unless a reference latent is
given (``reference_audio_timbre_latents``: then the audio codes are not used
and the reference is the source). An all-zero caption (ConditioningZeroOut)
asks the network for its learned null condition, as ComfyUI does.
"""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.quant import network_weights
from .silence import silence_latent
from .transformer import AceStep15, AceStepConfig

SUPPORTED = (torch.bfloat16, torch.float32)
#: frames of the timbre reference ComfyUI keeps when audio codes drive the generation (30 s)
REFERENCE_FRAMES = 750


class AceStep15Model(BaseModel):
    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        device, noise = kwargs["device"], kwargs["noise"]
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            if torch.count_nonzero(cross_attn) == 0:
                out["replace_with_null_embeds"] = C.CONDConstant(True)
            out["c_crossattn"] = C.CONDRegular(cross_attn)
            out["lyric_embed"] = C.CONDRegular(kwargs.get("conditioning_lyrics"))
        length = noise.shape[2]
        reference = kwargs.get("reference_audio_timbre_latents")
        if reference:
            refer = reference[-1][:, :, :length].to(device)
            out["is_covers"] = C.CONDConstant(True)
        else:
            refer = silence_latent(length, device)
            codes = kwargs.get("audio_codes")
            if codes is not None:
                out["audio_codes"] = C.CONDRegular(torch.tensor(codes, device=device))
                refer = refer[:, :, :REFERENCE_FRAMES]
            else:
                out["is_covers"] = C.CONDConstant(False)
        if refer.shape[2] < length:
            pad = silence_latent(length, device)
            refer = torch.cat([refer.to(pad), pad[:, :, refer.shape[2]:]], dim=2)
        out["refer_audio"] = C.CONDRegular(refer)
        return out


def network_layout(config: dict[str, Any]) -> AceStepConfig:
    keys = AceStepConfig.__dataclass_fields__
    return AceStepConfig(**{k: v for k, v in config.items() if k in keys})


class AceStep15Config(ModelConfig):
    """ComfyUI's ``ACEStep15``: flow matching (multiplier 1, shift 3), 64-channel 1-d latents, bf16/fp32."""

    architecture = "ace_step15"
    unet_config = {"audio_model": "ace1.5"}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"multiplier": 1.0, "shift": 3.0}
    latent_format = latent_formats.ACEAudio15
    memory_usage_factor = 4.7
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "ace_step"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def lora_keys(self, model_keys: set[str], key_map: dict[str, Any]) -> None:
        """LoRA names of the DiT's layers besides ``diffusion_model.<layer>``: ACE-Step's own trainer's
        (PEFT, ``base_model.model.<layer>``, relative to the ``decoder.``) and the LyCORIS spelling, as
        ComfyUI maps them."""
        for key in model_keys:
            if key.startswith("diffusion_model.decoder.") and key.endswith(".weight"):
                name = key[len("diffusion_model.decoder."):-len(".weight")]
                key_map.setdefault(f"base_model.model.{name}", key)
                key_map.setdefault("lycoris_" + name.replace(".", "_"), key)

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return AceStep15Model(self, ModelType.FLOW, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        layout = network_layout(self.unet_config)
        weights = network_weights(path, prefix, shapes, "ACE-Step 1.5 DiT", "unet",
                                  lambda ops, compute: AceStep15(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        """The checkpoint's ``text_encoders.qwen3_06b`` and ``qwen3_2b`` / ``qwen3_4b`` parts."""
        from .detect import qwen3_prefix
        from .text import ace15_clip

        parts = []
        for name in ("qwen3_06b", "qwen3_2b", "qwen3_4b"):
            prefix = f"text_encoders.{name}.transformer."
            if qwen3_prefix({k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}) == "":
                parts.append((path, prefix, shapes))
        return ace15_clip(parts) if parts else None


CONFIGS = [AceStep15Config]
