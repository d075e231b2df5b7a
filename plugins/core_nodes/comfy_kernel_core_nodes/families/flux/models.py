"""The supported Flux-style models (ComfyUI's ``Flux``, ``FluxInpaint``, ``FluxSchnell``, ``Chroma``) and their MODEL."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from ...model import conds as C
from ...model import latent_formats, ops, quant_layouts
from ...model.base import BaseModel, ModelType, WeightsSource, resize_to_batch_size
from ...model.detection import ModelConfig, Shapes
from ...model.files import file_identity, load_module
from ...model.weight_formats import attach_scales, dit_dtypes, has_packed, network_keys, scaled_reader
from .model import Flux as FluxNetwork
from .model import FluxParams


def flux_params(config: dict[str, Any]) -> FluxParams:
    """The network parameters of a detected ``unet_config`` (channels per token = channels * patch²)."""
    patch = config.get("patch_size", 2)
    return FluxParams(
        in_channels=config["in_channels"] * patch * patch, out_channels=config["out_channels"] * patch * patch,
        vec_in_dim=config.get("vec_in_dim", 768), context_in_dim=config["context_in_dim"],
        hidden_size=config["hidden_size"], mlp_ratio=config["mlp_ratio"], num_heads=config["num_heads"],
        depth=config["depth"], depth_single_blocks=config["depth_single_blocks"],
        axes_dim=tuple(config["axes_dim"]), theta=config["theta"], patch_size=patch, qkv_bias=config["qkv_bias"],
        guidance_embed=config.get("guidance_embed", False))


def _follow_img_in(model: torch.nn.Module, sd: dict[str, torch.Tensor], operations: Any) -> None:
    """A control LoRA (depth, canny) pads ``img_in`` to more input features: build the layer that wide."""
    weight = sd.get("img_in.weight")
    layer = getattr(model, "img_in", None)
    if weight is None or layer is None or weight.shape[1] == layer.in_features:
        return
    with torch.device("meta"):
        model.img_in = operations.Linear(weight.shape[1], layer.out_features, bias=layer.bias is not None)
    model.in_channels = weight.shape[1]


def dit_weights(path: str, prefix: str, shapes: Shapes, network: Any, name: str,
                weight_dtype: torch.dtype | None = None) -> WeightsSource:
    """The transformer under ``prefix``; ``network(ops, compute_dtype)`` builds it on the meta device.

    Storage: UNETLoader's ``weight_dtype``, else the file's fp8, else bf16 where the device
    computes it, else the device's UNet dtype; one copy of the weights, assigned not copied.
    """
    storage, compute = dit_dtypes(path, prefix, weight_dtype)

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        packed = has_packed(sd)
        operations = ops.manual_cast if packed else ops.pick_operations(storage(), compute())
        with torch.device("meta"):
            model = network(operations, compute() if operations.cast else None)
        _follow_img_in(model, sd, operations)
        if packed:
            quant_layouts.prepare(model, sd)
        model = load_module(model, sd, name)
        attach_scales(model, sd)
        return ops.set_compute_dtype(model, compute()) if operations.cast else model

    keys = network_keys(shapes, prefix)
    size = sum(math.prod(shapes[prefix + k]) for k in keys) * storage().itemsize
    tag = "" if weight_dtype is None else f"@{weight_dtype}"
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#{name}{tag}", read=scaled_reader(path, prefix, storage, compute=compute, packed=True),
                         build=build, keys=keys, size=size, dtype=storage, compute=compute)


class FluxModel(BaseModel):
    """Flux's conditioning: T5 context, CLIP-L pooled vector, guidance, Fill's concat, Kontext's references."""

    def __init__(self, model_config: Any, model_type: ModelType = ModelType.FLUX,
                 weights: WeightsSource | None = None, device: Any = None) -> None:
        super().__init__(model_config, model_type, weights, device)
        self.memory_usage_factor_conds = ("ref_latents",)

    def encode_adm(self, **kwargs: Any) -> torch.Tensor | None:
        return kwargs.get("pooled_output")

    def concat_cond(self, **kwargs: Any) -> torch.Tensor | None:
        """The concat image's latent when the network takes more channels than it returns (Fill, and Flux with
        a depth/canny control LoRA, whose widened ``img_in`` is read from the bound network), and for Fill the
        mask folded into 64 channels (8x8 pixels per latent pixel)."""
        from comfy_kernel.nodes.resize import common_upscale

        channels = self.unet_config["in_channels"]
        module = self._module  # the bound network while sampling: a control LoRA may have widened img_in
        img_in = getattr(module, "img_in", None) if module is not None else None
        if img_in is not None and getattr(module, "patch_size", None):
            channels = img_in.weight.shape[1] // (module.patch_size * module.patch_size)
        out_channels = self.unet_config["out_channels"]
        if channels <= out_channels:
            return None
        noise, device = kwargs["noise"], kwargs["device"]
        image = kwargs.get("concat_latent_image")
        if image is None:
            image = torch.zeros_like(noise)
        image = common_upscale(image.to(device), noise.shape[-1], noise.shape[-2], "bilinear", "center")
        image = self.process_latent_in(resize_to_batch_size(image, noise.shape[0]))
        if channels <= out_channels * 2:
            return image
        mask = kwargs.get("concat_mask", kwargs.get("denoise_mask"))
        if mask is None:
            mask = torch.ones_like(noise)[:, :1]
        mask = torch.mean(mask, dim=1, keepdim=True)
        mask = common_upscale(mask.to(device), noise.shape[-1] * 8, noise.shape[-2] * 8, "bilinear", "center")
        b, _, h, w = mask.shape
        mask = mask.view(b, h // 8, 8, w // 8, 8).permute(0, 2, 4, 1, 3).reshape(b, 64, h // 8, w // 8)
        return torch.cat((image, resize_to_batch_size(mask, noise.shape[0])), dim=1)

    def extra_conds(self, **kwargs: Any) -> dict[str, C.CONDRegular]:
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDRegular(cross_attn)
        guidance = kwargs.get("guidance", self.default_guidance)
        if guidance is not None:
            out["guidance"] = C.CONDRegular(torch.FloatTensor([guidance]))
        refs = kwargs.get("reference_latents")
        if refs is not None:
            out["ref_latents"] = C.CONDList([self.process_latent_in(r) for r in refs])
            method = kwargs.get("reference_latents_method")
            if method is not None:
                out["ref_latents_method"] = C.CONDConstant(method)
        return out

    default_guidance: float | None = 3.5

    def extra_conds_shapes(self, **kwargs: Any) -> dict[str, list[int]]:
        refs = kwargs.get("reference_latents")
        if refs is None:
            return {}
        channels = self.latent_format.latent_channels
        return {"ref_latents": [1, channels, sum(math.prod(r.size()) for r in refs) // channels]}


class FluxConfig(ModelConfig):
    """Flux.1 dev (and Kontext dev, and fine-tunes with the guidance embedding)."""

    architecture = "flux"
    family = "flux"
    clip_type = "flux"
    unet_config = {"image_model": "flux", "guidance_embed": True}
    unet_extra_config: dict[str, Any] = {}
    latent_format = latent_formats.Flux
    memory_usage_factor = 3.1
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]
    model_class = FluxModel
    sampling_type = ModelType.FLUX

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return self.sampling_type

    def inpaint_model(self) -> bool:
        return self.unet_config.get("in_channels", 16) > self.unet_config.get("out_channels", 16)

    def diffusers_names(self, config: dict[str, Any]) -> dict[str, Any]:
        return diffusers_names(config)

    def lora_keys(self, model_keys: set[str], key_map: dict[str, Any]) -> None:
        """LoRA names in diffusers' layout, as diffusers/ai-toolkit (``transformer.``), OneTrainer
        (``lora_transformer_``) and SimpleTuner's LyCORIS (``lycoris_``) save them."""
        for name, target in self.diffusers_names(self.unet_config).items():
            if (target if isinstance(target, str) else target[0]) not in model_keys:
                continue
            flat = name.replace(".", "_")
            key_map["transformer." + name] = target
            key_map["lora_transformer_" + flat] = target
            key_map["lycoris_" + flat] = target

    def network(self) -> Any:
        params = flux_params(self.unet_config)
        return lambda operations, compute: FluxNetwork(params, operations, compute)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        from . import diffusers_layout

        if diffusers_layout.is_diffusers_flux(shapes, prefix):
            stripped = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
            virtual = {prefix + k: v for k, v in diffusers_layout.bfl_shapes(stripped).items()}
            weights = dit_weights(path, prefix, virtual, self.network(), "Flux", weight_dtype)
            read = weights.read
            weights = dataclasses.replace(weights, read=lambda device: diffusers_layout.to_bfl(read(device), stripped))
        else:
            weights = dit_weights(path, prefix, shapes, self.network(), "Flux", weight_dtype)
        return self.model_class(self, self.model_type(shapes, prefix), weights)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .text import flux_clip_from_checkpoint

        return flux_clip_from_checkpoint(path, shapes, embedding_directory)


def diffusers_names(config: dict[str, Any]) -> dict[str, Any]:
    """Diffusers' Flux.1 layer names (no ``.weight``) -> the model key, or (key, (dim, offset, size)) for a
    slice of a fused layer (q, k, v in ``qkv``; q, k, v and the MLP input in a single block's ``linear1``)."""
    hidden = config["hidden_size"]
    mlp = int(hidden * config["mlp_ratio"])
    prefix = "diffusion_model."
    out: dict[str, Any] = {}
    for i in range(config["depth"]):
        src, dst = f"transformer_blocks.{i}.", f"{prefix}double_blocks.{i}."
        for j, part in enumerate("qkv"):
            out[f"{src}attn.to_{part}"] = (dst + "img_attn.qkv.weight", (0, j * hidden, hidden))
            out[f"{src}attn.add_{part}_proj"] = (dst + "txt_attn.qkv.weight", (0, j * hidden, hidden))
        for a, b in (("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
                     ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
                     ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                     ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2")):
            out[src + a] = dst + b + ".weight"
    for i in range(config["depth_single_blocks"]):
        src, dst = f"single_transformer_blocks.{i}.", f"{prefix}single_blocks.{i}."
        for j, part in enumerate("qkv"):
            out[f"{src}attn.to_{part}"] = (dst + "linear1.weight", (0, j * hidden, hidden))
        out[src + "proj_mlp"] = (dst + "linear1.weight", (0, 3 * hidden, mlp))
        out[src + "norm.linear"] = dst + "modulation.lin.weight"
        out[src + "proj_out"] = dst + "linear2.weight"
    for a, b in (("x_embedder", "img_in"), ("context_embedder", "txt_in"),
                 ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                 ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                 ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                 ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                 ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                 ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
                 ("proj_out", "final_layer.linear")):
        out[a] = f"{prefix}{b}.weight"
    return out


def flux2_diffusers_names(config: dict[str, Any]) -> dict[str, Any]:
    """Diffusers' Flux.2 layer names -> the model key or a slice of the fused image / text qkv."""
    hidden = config["hidden_size"]
    prefix = "diffusion_model."
    out: dict[str, Any] = {}
    for i in range(config["depth"]):
        src, dst = f"transformer_blocks.{i}.", f"{prefix}double_blocks.{i}."
        for j, part in enumerate("qkv"):
            out[f"{src}attn.to_{part}"] = (dst + "img_attn.qkv.weight", (0, j * hidden, hidden))
            out[f"{src}attn.add_{part}_proj"] = (dst + "txt_attn.qkv.weight", (0, j * hidden, hidden))
        for a, b in (("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
                     ("ff.linear_in", "img_mlp.0"), ("ff.linear_out", "img_mlp.2"),
                     ("ff_context.linear_in", "txt_mlp.0"), ("ff_context.linear_out", "txt_mlp.2")):
            out[src + a] = dst + b + ".weight"
    for i in range(config["depth_single_blocks"]):
        src, dst = f"single_transformer_blocks.{i}.", f"{prefix}single_blocks.{i}."
        out[src + "attn.to_qkv_mlp_proj"] = dst + "linear1.weight"
        out[src + "attn.to_out"] = dst + "linear2.weight"
    for a, b in (("x_embedder", "img_in"), ("context_embedder", "txt_in"),
                 ("time_guidance_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                 ("time_guidance_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                 ("time_guidance_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                 ("time_guidance_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
                 ("double_stream_modulation_img.linear", "double_stream_modulation_img.lin"),
                 ("double_stream_modulation_txt.linear", "double_stream_modulation_txt.lin"),
                 ("single_stream_modulation.linear", "single_stream_modulation.lin"),
                 ("proj_out", "final_layer.linear")):
        out[a] = f"{prefix}{b}.weight"
    return out


class FluxInpaintConfig(FluxConfig):
    """Flux.1 Fill: 16 noise + 16 masked-image + 64 mask channels in."""

    family = "flux_fill"
    unet_config = {"image_model": "flux", "guidance_embed": True, "in_channels": 96}
    supported_inference_dtypes = [torch.bfloat16, torch.float32]


class FluxSchnellConfig(FluxConfig):
    """Flux.1 schnell: no guidance embedding; plain rectified-flow sigmas (shift 1, multiplier 1)."""

    family = "flux_schnell"
    unet_config = {"image_model": "flux", "guidance_embed": False}
    sampling_settings = {"multiplier": 1.0, "shift": 1.0}
    sampling_type = ModelType.FLOW


class ChromaModel(FluxModel):
    """Chroma: no pooled vector; the guidance input defaults to 0."""

    default_guidance = 0.0


class ChromaConfig(FluxConfig):
    family = "chroma"
    clip_type = "chroma"
    unet_config = {"image_model": "chroma"}
    sampling_settings = {"multiplier": 1.0}
    memory_usage_factor = 3.2
    model_class = ChromaModel

    def network(self) -> Any:
        from .chroma import Chroma

        config = self.unet_config
        params = flux_params(config)
        params = FluxParams(**{**params.__dict__, "extra": {k: config[k] for k in ("in_dim", "out_dim", "hidden_dim",
                                                                                   "n_layers")}})
        return lambda operations, compute: Chroma(params, operations, compute)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        weights = dit_weights(path, prefix, shapes, self.network(), "Chroma", weight_dtype)
        return self.model_class(self, self.model_type(shapes, prefix), weights)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .text import flux_clip_from_checkpoint

        return flux_clip_from_checkpoint(path, shapes, embedding_directory, with_l=False)


class Flux2Model(FluxModel):
    """Flux.2: no pooled vector; reference latents are extra image tokens (edits).

    A context shorter than 512 tokens is padded with zeros in front, as ComfyUI does.
    """

    def encode_adm(self, **kwargs: Any) -> torch.Tensor | None:
        return None

    def extra_conds(self, **kwargs: Any) -> dict[str, C.CONDRegular]:
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None and cross_attn.shape[1] < 512:
            padded = torch.nn.functional.pad(cross_attn, (0, 0, 512 - cross_attn.shape[1], 0))
            out["c_crossattn"] = C.CONDRegular(padded)
        return out


class Flux2Config(FluxConfig):
    """Flux.2 dev and klein: detected from the shared modulation layers; widths and depths from the keys."""

    architecture = "flux2"
    family = "flux2"
    clip_type = "flux2"
    unet_config = {"image_model": "flux2"}
    latent_format = latent_formats.Flux2
    sampling_settings = {"shift": 2.02}
    model_class = Flux2Model
    memory_usage_factor = 2.8
    vae_key_prefix = ["vae."]

    def diffusers_names(self, config: dict[str, Any]) -> dict[str, Any]:
        return flux2_diffusers_names(config)

    def inpaint_model(self) -> bool:
        return False

    def network(self) -> Any:
        from .flux2 import Flux2

        params = flux_params(self.unet_config)
        return lambda operations, compute: Flux2(params, operations, compute)

    def load(self, path: str, shapes: Shapes, prefix: str, weight_dtype: torch.dtype | None = None) -> BaseModel:
        weights = dit_weights(path, prefix, shapes, self.network(), "Flux.2", weight_dtype)
        return self.model_class(self, self.model_type(shapes, prefix), weights)

    def load_clip(self, path: str, shapes: Shapes, embedding_directory: Any = None) -> Any:
        from .flux2_text import klein_clip_from_checkpoint

        return klein_clip_from_checkpoint(path, shapes)
