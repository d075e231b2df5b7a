"""The supported Stable Diffusion UNet models and how their MODEL is built."""

from __future__ import annotations

from typing import Any

import torch

from ...model import latent_formats
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.devices import storage_dtype
from ...model.files import file_identity, load_module, part_reader, part_size
from .unet import UNetConfig, UNetModel


def unet_layout(config: dict[str, Any]) -> UNetConfig:
    return UNetConfig(
        in_channels=config["in_channels"], out_channels=config["out_channels"],
        model_channels=config["model_channels"], channel_mult=tuple(config["channel_mult"]),
        num_res_blocks=tuple(config["num_res_blocks"]), transformer_depth=tuple(config["transformer_depth"]),
        transformer_depth_output=tuple(config["transformer_depth_output"]),
        transformer_depth_middle=config["transformer_depth_middle"], context_dim=config["context_dim"] or 0,
        num_heads=config.get("num_heads", -1), num_head_channels=config.get("num_head_channels", -1),
        use_linear_in_transformer=config["use_linear_in_transformer"], adm_in_channels=config["adm_in_channels"],
    )


def unet_weights(path: str, prefix: str, shapes: Shapes, layout: UNetConfig) -> WeightsSource:
    dtype = lambda: storage_dtype("unet")  # noqa: E731

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        with torch.device("meta"):
            model = UNetModel(layout)
        return load_module(model, sd, "UNet")

    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix))
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#unet", read=part_reader(path, prefix, dtype),
                         build=build, keys=keys, size=part_size(path, prefix, torch.float32), dtype=dtype)


class SDUNetConfig(ModelConfig):
    """Common to the UNet models: MODEL from the keys under a prefix."""

    family = "sd"

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        model = BaseModel(self, self.model_type(shapes, prefix), weights)
        if self.inpaint_model():
            model.set_inpaint()
        return model

    def load(self, path: str, shapes: Shapes, prefix: str) -> BaseModel:
        return self.get_model(unet_weights(path, prefix, shapes, unet_layout(self.unet_config)), shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .text import CLIP_L_PREFIXES, clip_l_prefix, sd1_clip

        prefix = clip_l_prefix({k: v for k, v in shapes.items() if k.startswith("cond_stage_model.")})
        if prefix is None or prefix not in CLIP_L_PREFIXES:
            return None
        return sd1_clip(path, prefix, shapes, embedding_directory)


class SD15(SDUNetConfig):
    unet_config = {"context_dim": 768, "model_channels": 320, "use_linear_in_transformer": False,
                   "adm_in_channels": None, "use_temporal_attention": False}
    unet_extra_config = {"num_heads": 8, "num_head_channels": -1}
    latent_format = latent_formats.SD15
    memory_usage_factor = 1.0
    family = "sd15"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.EPS
