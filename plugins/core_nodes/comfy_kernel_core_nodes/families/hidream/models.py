"""HiDream-I1 (full, dev, fast) and HiDream-E1 as supported models: detection config, MODEL, conditioning inputs."""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.quant import network_weights
from .transformer import HiDreamConfig, HiDreamTransformer, full_llama_layers

SUPPORTED = (torch.bfloat16, torch.float32)


class HiDreamModel(BaseModel):
    """Pooled CLIP vector as ``y``, T5 states as context, the Llama layer stack, and E1's input image latent."""

    def encode_adm(self, **kwargs: Any) -> torch.Tensor | None:
        return kwargs.get("pooled_output")

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        llama = kwargs.get("conditioning_llama3")
        if llama is not None:
            out["encoder_hidden_states_llama3"] = C.CONDRegular(llama)
        image = kwargs.get("concat_latent_image")
        if image is not None:
            out["image_cond"] = C.CONDNoiseShape(self.process_latent_in(image))
        return out


def transformer_layout(config: dict[str, Any]) -> HiDreamConfig:
    """The network's configuration from the detected ``unet_config``."""
    blocks = config["num_layers"] + config["num_single_layers"]
    t5_channels, llama_channels = config.get("caption_channels", (4096, 4096))
    return HiDreamConfig(in_channels=config["in_channels"], out_channels=config["out_channels"],
                         num_layers=config["num_layers"], num_single_layers=config["num_single_layers"],
                         num_attention_heads=config["num_attention_heads"],
                         attention_head_dim=config.get("attention_head_dim", 128), t5_channels=t5_channels,
                         llama_channels=llama_channels, text_emb_dim=config.get("text_emb_dim", 2048),
                         num_routed_experts=config.get("num_routed_experts", 4),
                         num_activated_experts=config.get("num_activated_experts", 2),
                         axes_dims_rope=tuple(config.get("axes_dims_rope", (64, 32, 32))),
                         llama_layers=full_llama_layers(blocks))


class HiDream(ModelConfig):
    """ComfyUI's ``HiDream``: flow matching (shift 1, multiplier 1000), Flux latents, bf16/fp32 only."""

    architecture = "hidream"
    unet_config = {"image_model": "hidream"}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings: dict[str, Any] = {}
    latent_format = latent_formats.Flux
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "hidream"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def inpaint_model(self) -> bool:
        return False

    def lora_keys(self, model_keys: set[str], key_map: dict[str, Any]) -> None:
        """SimpleTuner's LoRA names besides ``diffusion_model.<layer>``: ``transformer.<layer>`` and the
        LyCORIS spelling, as ComfyUI maps them for HiDream."""
        for key in model_keys:
            if key.startswith("diffusion_model.") and key.endswith(".weight"):
                name = key[len("diffusion_model."):-len(".weight")]
                key_map["lycoris_" + name.replace(".", "_")] = key
                key_map["transformer." + name] = key

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return HiDreamModel(self, ModelType.FLOW, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        layout = transformer_layout(self.unet_config)
        weights = network_weights(path, prefix, shapes, "HiDream transformer", "unet",
                                  lambda ops, compute: HiDreamTransformer(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        return None
