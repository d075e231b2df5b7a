"""Wan 2.1 / 2.2 as supported models (ComfyUI's ``WAN21_T2V``, ``WAN21_I2V``, ``WAN21_Vace``, ``WAN22_T2V``,
``WAN21_Camera``, ``WAN22_Camera``, ``WAN22_S2V``, ``WAN21_HuMo``, ``WAN22_Animate``)."""

from __future__ import annotations

from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats
from ...model.base import BaseModel, ModelType, WeightsSource, resize_to_batch_size
from ...model.detection import ModelConfig, Shapes
from ...model.quant import network_weights
from .humo import HumoConfig, WanHumoTransformer
from .s2v import S2VConfig, WanS2VTransformer
from .transformer import WanConfig, WanTransformer

SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)


class WanModel(BaseModel):
    """Text states as-is; I2V's start-image latents and mask as extra input channels; CLIP vision tokens."""

    def __init__(self, model_config: Any, model_type: ModelType = ModelType.FLOW,
                 weights: WeightsSource | None = None, image_to_video: bool = False) -> None:
        super().__init__(model_config, model_type, weights)
        self.image_to_video = image_to_video

    def concat_cond(self, **kwargs: Any) -> torch.Tensor | None:
        from comfy_kernel.nodes.resize import common_upscale

        noise = kwargs.get("noise")
        extra = self.unet_config.get("in_dim", noise.shape[1]) - noise.shape[1]
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
        if extra != image.shape[1] + 4 and (not self.image_to_video or extra == image.shape[1]):
            return image
        image = image[:, : extra - 4]
        mask = kwargs.get("concat_mask", kwargs.get("denoise_mask"))
        if mask is None:
            mask = torch.zeros_like(noise)[:, :4]
        else:
            if mask.shape[1] != 4:
                mask = torch.mean(mask, dim=1, keepdim=True)
            mask = common_upscale(1.0 - mask.to(device), noise.shape[-1], noise.shape[-2], "bilinear", "center")
            if mask.shape[-3] < noise.shape[-3]:
                mask = torch.nn.functional.pad(mask, (0, 0, 0, 0, 0, noise.shape[-3] - mask.shape[-3]))
            if mask.shape[1] == 1:
                mask = mask.repeat(1, 4, 1, 1, 1)
            mask = resize_to_batch_size(mask, noise.shape[0])
        index = kwargs.get("concat_mask_index", 0)
        if index:
            return torch.cat((image[:, :index], mask, image[:, index:]), dim=1)
        return torch.cat((mask, image), dim=1)

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        clip_vision = kwargs.get("clip_vision_output")
        if clip_vision is not None:
            out["clip_fea"] = C.CONDRegular(clip_vision.penultimate_hidden_states)
        concat = kwargs.get("time_dim_concat")
        if concat is not None:
            out["time_dim_concat"] = C.CONDRegular(self.process_latent_in(concat))
        refs = kwargs.get("reference_latents")
        if refs is not None:
            out["reference_latent"] = C.CONDRegular(self.process_latent_in(refs[-1])[:, :, 0])
        return out


class WanVaceModel(WanModel):
    """VACE: control video latents (inactive / reactive halves) and their masks per control."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        noise = kwargs["noise"]
        shape = list(noise.shape)
        frames = kwargs.get("vace_frames")
        if frames is None:
            frames = [torch.zeros([shape[0], 32, *shape[2:]], device=noise.device, dtype=noise.dtype)]
        masks = kwargs.get("vace_mask")
        if masks is None:
            masks = [torch.ones([shape[0], 64, *shape[2:]], device=noise.device, dtype=noise.dtype)] * len(frames)
        stacked = []
        for frame, mask in zip(frames, masks, strict=False):
            frame = frame.to(device=noise.device, dtype=noise.dtype, copy=True)
            for i in range(0, frame.shape[1], 16):
                frame[:, i: i + 16] = self.process_latent_in(frame[:, i: i + 16])
            stacked.append(torch.cat([frame, mask.to(device=noise.device, dtype=noise.dtype)], dim=1))
        out["vace_context"] = C.CONDRegular(torch.stack(stacked, dim=1))
        out["vace_strength"] = C.CONDConstant(kwargs.get("vace_strength", [1.0] * len(stacked)))
        return out


class WanCameraModel(WanModel):
    """Fun camera models: the camera embedding (WAN_CAMERA_EMBEDDING) goes to the transformer's adapter."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        camera = kwargs.get("camera_conditions")
        if camera is not None:
            out["camera_conditions"] = C.CONDRegular(camera)
        return out


class WanS2VModel(WanModel):
    """S2V: audio windows, the reference image's latents, the preceding clip's latents and the control video."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        audio = kwargs.get("audio_embed")
        if audio is not None:
            out["audio_embed"] = C.CONDRegular(audio)
        refs = kwargs.get("reference_latents")
        if refs is not None:
            out["reference_latent"] = C.CONDRegular(self.process_latent_in(refs[-1]))
        for key in ("reference_motion", "control_video"):
            value = kwargs.get(key)
            if value is not None:
                out[key] = C.CONDRegular(self.process_latent_in(value))
        return out


class WanHumoModel(WanModel):
    """HuMo: Whisper audio windows and the reference image's latents (all its frames, as tokens after the video).

    As in ComfyUI, the reference goes in as tokens only for models without
    extra input channels (the released ones); it is left out otherwise.
    """

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        audio = kwargs.get("audio_embed")
        if audio is not None:
            out["audio_embed"] = C.CONDRegular(audio)
        out.pop("reference_latent", None)
        refs = kwargs.get("reference_latents")
        if refs is not None and "c_concat" not in out:
            out["reference_latent"] = C.CONDRegular(self.process_latent_in(refs[-1]))
        return out


class Wan22Model(WanModel):
    """The 5B TI2V model: frames kept by the noise mask (the start image) get timestep 0."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        mask = kwargs.get("denoise_mask")
        if mask is not None:
            out["denoise_mask"] = C.CONDRegular(mask)
        return out

    def process_timestep(self, timestep: torch.Tensor, x: torch.Tensor | None = None,
                         denoise_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if denoise_mask is None:
            return timestep
        per_frame = torch.mean(denoise_mask, dim=(1, 3, 4), keepdim=True)
        return (per_frame * timestep.view([timestep.shape[0]] + [1] * (denoise_mask.ndim - 1))) \
            .reshape(timestep.shape[0], -1)

    def scale_latent_inpaint(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                             latent_image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return latent_image


def transformer_layout(config: dict[str, Any]) -> WanConfig:
    if config.get("model_type") == "humo":
        audio = {k: config[k] for k in ("audio_width", "audio_hidden", "audio_dim", "audio_tokens") if k in config}
        return HumoConfig(in_dim=config["in_dim"], dim=config["dim"], ffn_dim=config["ffn_dim"],
                          freq_dim=config.get("freq_dim", 256), text_dim=config.get("text_dim", 4096),
                          out_dim=config["out_dim"], num_heads=config["num_heads"], num_layers=config["num_layers"],
                          **audio)
    if config.get("model_type") == "s2v":
        return S2VConfig(in_dim=config["in_dim"], dim=config["dim"], ffn_dim=config["ffn_dim"],
                         freq_dim=config.get("freq_dim", 256), text_dim=config.get("text_dim", 4096),
                         out_dim=config["out_dim"], num_heads=config["num_heads"], num_layers=config["num_layers"],
                         audio_dim=config["audio_dim"], audio_layers=config["audio_layers"],
                         audio_tokens=config["audio_tokens"], inject_layers=tuple(config["inject_layers"]),
                         cond_dim=config["cond_dim"])
    return WanConfig(model_type=config.get("model_type", "t2v"), in_dim=config["in_dim"], dim=config["dim"],
                     ffn_dim=config["ffn_dim"], freq_dim=config.get("freq_dim", 256),
                     text_dim=config.get("text_dim", 4096), out_dim=config["out_dim"],
                     num_heads=config["num_heads"], num_layers=config["num_layers"],
                     image_embedding=config.get("model_type") in ("i2v", "camera"),
                     flf_pos_embed_token_number=config.get("flf_pos_embed_token_number"),
                     vace_layers=config.get("vace_layers", 0), vace_in_dim=config.get("vace_in_dim", 96),
                     in_dim_ref_conv=config.get("in_dim_ref_conv"),
                     in_dim_control_adapter=config.get("in_dim_control_adapter"))


class Wan21T2V(ModelConfig):
    """ComfyUI's ``WAN21_T2V``: flow matching with shift 8, Wan 2.1 latents (also the Wan 2.2 14B experts)."""

    architecture = "wan"
    unet_config = {"image_model": "wan2.1", "model_type": "t2v"}
    unet_extra_config: dict[str, Any] = {}
    sampling_settings = {"shift": 8.0}
    latent_format = latent_formats.Wan21
    memory_usage_factor = 0.9
    supported_inference_dtypes = list(SUPPORTED)
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    family = "wan"
    model_class: type = WanModel
    image_to_video = False

    def __init__(self, unet_config: dict[str, Any]) -> None:
        super().__init__(unet_config)
        self.memory_usage_factor = self.unet_config.get("dim", 2000) / 2222

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.FLOW

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        return self.model_class(self, ModelType.FLOW, weights, image_to_video=self.image_to_video)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        layout = transformer_layout(self.unet_config)
        network = {S2VConfig: WanS2VTransformer, HumoConfig: WanHumoTransformer}.get(type(layout), WanTransformer)
        weights = network_weights(path, prefix, shapes, "Wan transformer", "unet",
                                  lambda ops, compute: network(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .detect import umt5_prefix
        from .text import wan_clip

        sub = {k: v for k, v in shapes.items() if k.startswith("text_encoders.")}
        prefix = umt5_prefix(sub)
        return None if prefix is None else wan_clip(path, prefix, shapes)


class Wan21I2V(Wan21T2V):
    """``WAN21_I2V``: start-image latents and mask as 20 extra channels, CLIP vision tokens."""

    unet_config = {"image_model": "wan2.1", "model_type": "i2v", "in_dim": 36}
    image_to_video = True


class Wan21Vace(Wan21T2V):
    """``WAN21_Vace``: the T2V model with VACE control blocks."""

    unet_config = {"image_model": "wan2.1", "model_type": "vace"}
    model_class = WanVaceModel

    def __init__(self, unet_config: dict[str, Any]) -> None:
        super().__init__(unet_config)
        self.memory_usage_factor *= 1.2


class Wan21Camera(Wan21T2V):
    """``WAN21_Camera``: Wan 2.1 Fun camera v1.1 (start-image latents as 16 extra channels, CLIP vision
    tokens, the camera adapter)."""

    unet_config = {"image_model": "wan2.1", "model_type": "camera", "in_dim": 32}
    model_class = WanCameraModel


class Wan22Camera(Wan21T2V):
    """``WAN22_Camera``: Wan 2.2 14B Fun camera (mask and start-image latents as 20 extra channels)."""

    unet_config = {"image_model": "wan2.1", "model_type": "camera_2.2", "in_dim": 36}
    model_class = WanCameraModel


class Wan22S2V(Wan21T2V):
    """``WAN22_S2V``: Wan 2.2 sound-to-video 14B (wav2vec2 audio, reference image, motion frames)."""

    unet_config = {"image_model": "wan2.1", "model_type": "s2v"}
    model_class = WanS2VModel


class Wan21HuMo(Wan21T2V):
    """``WAN21_HuMo``: HuMo 17B / 1.7B (Whisper audio windows, reference image tokens)."""

    unet_config = {"image_model": "wan2.1", "model_type": "humo"}
    model_class = WanHumoModel


class Wan22T2V(Wan21T2V):
    """``WAN22_T2V``: the 5B TI2V model (48-channel Wan 2.2 latents, per-frame timesteps)."""

    unet_config = {"image_model": "wan2.1", "model_type": "t2v", "out_dim": 48}
    latent_format = latent_formats.Wan22
    model_class = Wan22Model
    image_to_video = True


class WanAnimateModel(WanModel):
    """Animate: the face crops go in as they are, the pose video's latents scaled like the video's."""

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        faces = kwargs.get("face_video_pixels")
        if faces is not None:
            out["face_pixel_values"] = C.CONDRegular(faces)
        pose = kwargs.get("pose_video_latent")
        if pose is not None:
            out["pose_latents"] = C.CONDRegular(self.process_latent_in(pose))
        return out


class Wan22Animate(Wan21T2V):
    """``WAN22_Animate``: Wan 2.2 Animate 14B (I2V channels and CLIP vision tokens, pose latents, face crops)."""

    unet_config = {"image_model": "wan2.1", "model_type": "animate"}
    model_class = WanAnimateModel

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        from .animate import WanAnimateTransformer, animate_layout

        layout = animate_layout(transformer_layout(self.unet_config))
        weights = network_weights(path, prefix, shapes, "Wan transformer", "unet",
                                  lambda ops, compute: WanAnimateTransformer(layout, ops, compute),
                                  weight_dtype=weight_dtype, supported=SUPPORTED)
        return self.get_model(weights, shapes, prefix)


CONFIGS = [Wan22T2V, Wan21T2V, Wan21I2V, Wan21Vace, Wan21Camera, Wan22Camera, Wan22S2V, Wan21HuMo, Wan22Animate]
