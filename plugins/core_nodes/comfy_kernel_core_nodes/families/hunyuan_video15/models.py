"""HunyuanVideo 1.5 as supported models (ComfyUI's ``HunyuanVideo15`` and ``HunyuanVideo15_SR_Distilled``)."""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model.base import BaseModel, ModelType, WeightsSource, resize_to_batch_size
from ...model.detection import ModelConfig, Shapes
from ...model.latent_formats import LatentFormat
from ...model.quant import network_weights
from .transformer import HunyuanVideo15Config, HunyuanVideo15Transformer, module_key

SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)


class HunyuanVideo15Latent(LatentFormat):
    """32 channels, 3-d, scaled by 1.03682 (no per-channel statistics)."""

    scale_factor = 1.03682
    latent_channels = 32
    latent_dimensions = 3


class HunyuanVideo15Model(BaseModel):
    """Start-image latents and a keep-mask as 33 extra channels; byT5 and SigLIP tokens as extra inputs."""

    def concat_cond(self, **kwargs: Any) -> torch.Tensor | None:
        from comfy_kernel.nodes.resize import common_upscale

        noise = kwargs["noise"]
        extra = self.unet_config.get("in_channels", noise.shape[1]) - noise.shape[1] - 1
        if extra <= 0:
            return None
        device = kwargs["device"]
        image = kwargs.get("concat_latent_image")
        if image is None:
            image = torch.zeros([noise.shape[0], extra, *noise.shape[2:]], dtype=noise.dtype, device=noise.device)
        else:
            channels = self.latent_format.latent_channels
            image = common_upscale(image.to(device), noise.shape[-1], noise.shape[-2], "bilinear", "center")
            for i in range(0, image.shape[1], channels):
                image[:, i: i + channels] = self.process_latent_in(image[:, i: i + channels])
            image = resize_to_batch_size(image, noise.shape[0])
        mask = kwargs.get("concat_mask", kwargs.get("denoise_mask"))
        if mask is None:
            mask = torch.zeros_like(noise)[:, :1]
        else:
            mask = common_upscale((1.0 - mask).to(device), noise.shape[-1], noise.shape[-2], "bilinear", "center")
            if mask.shape[-3] < noise.shape[-3]:
                mask = torch.nn.functional.pad(mask, (0, 0, 0, 0, 0, noise.shape[-3] - mask.shape[-3]))
            mask = resize_to_batch_size(mask, noise.shape[0])
        return torch.cat((image.to(device), mask.to(device)), dim=1)

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None and torch.numel(mask) != mask.sum():
            out["attention_mask"] = C.CONDRegular(mask)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        byt5 = kwargs.get("conditioning_byt5small")
        if byt5 is not None:
            out["txt_byt5"] = C.CONDRegular(byt5)
        clip_vision = kwargs.get("clip_vision_output")
        if clip_vision is not None:
            out["clip_fea"] = C.CONDRegular(clip_vision.last_hidden_state)
        out["disable_time_r"] = C.CONDConstant(True)
        return out


class HunyuanVideo15SRModel(HunyuanVideo15Model):
    """The 1080p super-resolution model: the low-resolution latent (noise-augmented) and masks as 66 channels."""

    def concat_cond(self, **kwargs: Any) -> torch.Tensor | None:
        from comfy_kernel.nodes.resize import common_upscale

        noise = kwargs["noise"]
        image = kwargs.get("concat_latent_image")
        if image is None:
            return torch.zeros([noise.shape[0], noise.shape[1] * 2 + 2, *noise.shape[2:]], dtype=noise.dtype,
                               device=noise.device)
        image = common_upscale(image.to(kwargs["device"]), noise.shape[-1], noise.shape[-2], "bilinear", "center")
        image = resize_to_batch_size(image, noise.shape[0]).clone()
        low = slice(noise.shape[1] + 1, 2 * noise.shape[1] + 1)
        strength = kwargs.get("noise_augmentation", 0.0)
        if strength > 0:
            generator = torch.Generator(device="cpu").manual_seed((kwargs.get("seed") or 0) - 10)
            augment = torch.randn(image[:, low].shape, generator=generator, dtype=image.dtype).to(image.device)
            image[:, low] = strength * augment + min(1.0 - strength, 0.75) * image[:, low]
        else:
            image[:, low] = 0.75 * image[:, low]
        return image

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        out["disable_time_r"] = C.CONDConstant(False)
        return out


def transformer_layout(config: dict[str, Any]) -> HunyuanVideo15Config:
    return HunyuanVideo15Config(
        in_channels=config["in_channels"], out_channels=config["out_channels"], hidden_size=config["hidden_size"],
        num_heads=config["num_heads"], depth=config["depth"], depth_single_blocks=config["depth_single_blocks"],
        context_in_dim=config["context_in_dim"], axes_dim=tuple(config["axes_dim"]),
        patch_size=tuple(config["patch_size"]), byt5=config["byt5"], byt5_dim=config.get("byt5_dim", 1472),
        vision_in_dim=config["vision_in_dim"], cond_type_embedding=config["use_cond_type_embedding"],
        meanflow=config["meanflow"], guidance_embed=config["guidance_embed"])


class HunyuanVideo15(ModelConfig):
    """ComfyUI's ``HunyuanVideo15``: T2V and I2V (480p / 720p, distilled or not), flow matching with shift 7."""

    architecture = "hunyuan_video"
    unet_config = {"image_model": "hunyuan_video", "vision_in_dim": 1152}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"shift": 7.0}
    latent_format = HunyuanVideo15Latent
    memory_usage_factor = 4.0
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "hunyuan_video15"
    model_class: type = HunyuanVideo15Model

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return self.model_class(self, ModelType.FLOW, weights)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        layout = transformer_layout(self.unet_config)
        weights = network_weights(path, prefix, shapes, "HunyuanVideo 1.5 transformer", "unet",
                                  lambda ops, compute: HunyuanVideo15Transformer(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED, rename=module_key)
        return self.get_model(weights, shapes, prefix)


class HunyuanVideo15SR(HunyuanVideo15):
    """``HunyuanVideo15_SR_Distilled``: 98 input channels, shift 2."""

    unet_config = {"image_model": "hunyuan_video", "vision_in_dim": 1152, "in_channels": 98}
    sampling_settings = {"shift": 2.0}
    model_class = HunyuanVideo15SRModel


CONFIGS = [HunyuanVideo15SR, HunyuanVideo15]
