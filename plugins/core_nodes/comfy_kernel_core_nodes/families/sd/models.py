"""The supported Stable Diffusion UNet models and how their MODEL is built."""

from __future__ import annotations

from typing import Any

import torch

from ...model import latent_formats, ops
from ...model.base import BaseModel, ModelType, WeightsSource
from ...model.detection import ModelConfig, Shapes
from ...model.devices import compute_dtype, storage_dtype
from ...model.files import file_identity, load_module, part_reader, part_size
from .unet import UNetConfig, UNetModel


def unet_layout(config: dict[str, Any]) -> UNetConfig:
    return UNetConfig(
        in_channels=config["in_channels"], out_channels=config["out_channels"],
        model_channels=config["model_channels"], channel_mult=tuple(config["channel_mult"]),
        num_res_blocks=tuple(config["num_res_blocks"]), transformer_depth=tuple(config["transformer_depth"]),
        transformer_depth_output=tuple(config["transformer_depth_output"])[::-1],  # ComfyUI's order -> block order
        transformer_depth_middle=config["transformer_depth_middle"], context_dim=config["context_dim"] or 0,
        num_heads=config.get("num_heads", -1), num_head_channels=config.get("num_head_channels", -1),
        use_linear_in_transformer=config["use_linear_in_transformer"], adm_in_channels=config["adm_in_channels"],
    )


def unet_weights(path: str, prefix: str, shapes: Shapes, layout: UNetConfig,
                 weight_dtype: torch.dtype | None = None) -> WeightsSource:
    """The UNet under ``prefix``; ``weight_dtype`` overrides the storage dtype (fp8 from UNETLoader)."""
    dtype = (lambda: weight_dtype) if weight_dtype is not None else (lambda: storage_dtype("unet"))
    compute = lambda: compute_dtype("unet")  # noqa: E731

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        operations = ops.pick_operations(dtype(), compute())
        with torch.device("meta"):
            model = UNetModel(layout, operations, compute() if operations.cast else None)
        model = load_module(model, sd, "UNet")
        return ops.set_compute_dtype(model, compute()) if operations.cast else model

    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix))
    tag = "" if weight_dtype is None else f"@{weight_dtype}"
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#unet{tag}", read=part_reader(path, prefix, dtype),
                         build=build, keys=keys, size=part_size(path, prefix, weight_dtype or torch.float32),
                         dtype=dtype, compute=compute)


class SDUNetConfig(ModelConfig):
    """Common to the UNet models: MODEL from the keys under a prefix."""

    family = "sd"

    model_class = BaseModel

    def get_model(self, weights: WeightsSource, shapes: Shapes, prefix: str = "") -> BaseModel:
        model_type = self.model_type(shapes, prefix)
        model = self.model_class(self, model_type, weights)
        if self.inpaint_model():
            model.set_inpaint()
        return model

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        weights = unet_weights(path, prefix, shapes, unet_layout(self.unet_config), weight_dtype)
        return self.get_model(weights, shapes, prefix)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from ...components.clip.files import CLIP_L_PREFIXES, clip_l_prefix
        from .text import sd1_clip

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


class SD20(SDUNetConfig):
    """SD2.0 / 2.1 (512 eps and 768 v-prediction): OpenCLIP-H context, linear projections, 64-wide heads."""

    unet_config = {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True,
                   "adm_in_channels": None, "use_temporal_attention": False}
    latent_format = latent_formats.SD15
    memory_usage_factor = 1.0
    family = "sd2"

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        """v-prediction is told apart by the spread of one norm bias (the 768-v models' is wider)."""
        path = getattr(self, "path", None)
        key = f"{prefix}output_blocks.11.1.transformer_blocks.0.norm1.bias"
        if self.unet_config.get("in_channels") == 4 and path is not None and key in shapes:
            from ...model.files import read_tensor

            if torch.std(read_tensor(path, key).float(), unbiased=False) > 0.09:
                return ModelType.V_PREDICTION
        return ModelType.EPS

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        self.path = path
        return super().load(path, shapes, prefix, weight_dtype)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .text_h import sd2_clip

        return sd2_clip(path, shapes, embedding_directory)


def size_embedding(value: float) -> torch.Tensor:
    """The 256-wide sinusoidal embedding of one size value (SDXL's micro-conditioning)."""
    from .unet import timestep_embedding

    return timestep_embedding(torch.tensor([float(value)]), 256)


class SDXLModel(BaseModel):
    """SDXL: the pooled CLIP-G output and the image sizes go in as the ADM vector ``y``."""

    def encode_adm(self, **kwargs: Any) -> torch.Tensor:
        pooled = kwargs["pooled_output"]
        width, height = kwargs.get("width", 768), kwargs.get("height", 768)
        sizes = [height, width, kwargs.get("crop_h", 0), kwargs.get("crop_w", 0),
                 kwargs.get("target_height", height), kwargs.get("target_width", width)]
        flat = torch.flatten(torch.cat([size_embedding(v) for v in sizes])).unsqueeze(0).repeat(pooled.shape[0], 1)
        return torch.cat((pooled.to(flat.device), flat), dim=1)


class SDXLRefinerModel(BaseModel):
    """The SDXL refiner: pooled output, sizes and an aesthetic score (2.5 for negatives, 6 otherwise)."""

    def encode_adm(self, **kwargs: Any) -> torch.Tensor:
        pooled = kwargs["pooled_output"]
        width, height = kwargs.get("width", 768), kwargs.get("height", 768)
        score = kwargs.get("aesthetic_score", 2.5 if kwargs.get("prompt_type", "") == "negative" else 6)
        values = [height, width, kwargs.get("crop_h", 0), kwargs.get("crop_w", 0), score]
        flat = torch.flatten(torch.cat([size_embedding(v) for v in values])).unsqueeze(0).repeat(pooled.shape[0], 1)
        return torch.cat((pooled.to(flat.device), flat), dim=1)


class SDXL(SDUNetConfig):
    unet_config = {"model_channels": 320, "use_linear_in_transformer": True, "transformer_depth": (0, 0, 2, 2, 10, 10),
                   "context_dim": 2048, "adm_in_channels": 2816, "use_temporal_attention": False}
    latent_format = latent_formats.SDXL
    memory_usage_factor = 0.8
    family = "sdxl"
    model_class = SDXLModel
    clip_type = "sdxl"

    def __init__(self, unet_config: dict[str, Any]) -> None:
        super().__init__(unet_config)
        self.playground = False

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        if "edm_mean" in shapes and "edm_std" in shapes:  # Playground 2.5
            self.latent_format = latent_formats.SDXL_Playground_2_5
            self.sampling_settings = {"sigma_data": 0.5, "sigma_max": 80.0, "sigma_min": 0.002}
            return ModelType.EDM
        if "v_pred" in shapes:
            if "ztsnr" in shapes:
                self.sampling_settings = {"zsnr": True}
            return ModelType.V_PREDICTION
        return ModelType.EPS

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .text_xl import sdxl_clip_from_checkpoint

        return sdxl_clip_from_checkpoint(path, shapes, embedding_directory)


class SDXLRefiner(SDUNetConfig):
    unet_config = {"model_channels": 384, "use_linear_in_transformer": True, "context_dim": 1280,
                   "adm_in_channels": 2560, "transformer_depth": (0, 0, 4, 4, 4, 4, 0, 0),
                   "use_temporal_attention": False}
    latent_format = latent_formats.SDXL
    family = "sdxl_refiner"
    model_class = SDXLRefinerModel

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .text_xl import sdxl_clip_from_checkpoint

        return sdxl_clip_from_checkpoint(path, shapes, embedding_directory, with_l=False)
