"""CLIP_VISION and CLIP_VISION_OUTPUT in ComfyUI's ``comfy.clip_vision`` shapes.

``ClipVisionModel.encode_image(image, crop)`` preprocesses an IMAGE batch as
CLIP was trained (short side to 224, centre crop or stretch, 8-bit values,
CLIP's mean and std; SigLIP: 384 pixels, mean and std 0.5) and returns an
:class:`Output` with ``last_hidden_state`` (last layer, before the final norm;
SigLIP's after it), ``penultimate_hidden_states``, ``image_embeds`` (the
projected class token; SigLIP's normed tokens) and ``mm_projected`` (None: no
multimodal projector); SigLIP's also carries ``all_hidden_states``, every
layer's output [B, layers, tokens, width], as ComfyUI gives it. The encoder's weights live in the model manager,
stored like text encoders (fp16 on the CPU and most GPUs) and computed in fp32.
"""

from __future__ import annotations

from typing import Any

import torch

from ..components.clip_vision import (
    CLIPVisionModel,
    VisionConfig,
    config_from_keys,
    openclip_shapes,
    openclip_to_hf,
    preprocess,
)
from .auxiliary import AuxiliaryModel, base_name
from .base import WeightsSource
from .files import file_identity, load_module, part_reader, part_size, tensor_shapes
from .patcher import ModelPatcher


class UnsupportedClipVision(ValueError):
    """The file holds no image encoder this server can run."""


class Output:
    """CLIP_VISION_OUTPUT: attributes that can also be read and set by name (``out["image_embeds"]``)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, item: Any) -> None:
        setattr(self, key, item)


class VisionWeights(AuxiliaryModel):
    """The encoder's weights; calling it runs the network as ComfyUI's ``clip_vision.model(...)`` does.

    Packs that preprocess images themselves (IPAdapter_plus's masked
    encoding) call ``clip_vision.model(pixel_values=..., intermediate_output=-2)``
    and read ``(last_hidden_state, intermediate, image_embeds)``.
    """

    def __call__(self, pixel_values: torch.Tensor, attention_mask: Any = None,
                 intermediate_output: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        net = self.loaded_module
        last, hidden, embeds = net(pixel_values.to(next(net.parameters()).device),
                                   intermediate=-2 if intermediate_output is None else intermediate_output)
        return last, hidden if intermediate_output is not None else None, embeds


class ClipVisionModel:
    """A CLIP image encoder (what CLIP_VISION sockets carry)."""

    def __init__(self, config: VisionConfig, weights: WeightsSource) -> None:
        self.config = config
        self.image_size = config.image_size
        self.image_mean = [0.5, 0.5, 0.5] if config.siglip else [0.48145466, 0.4578275, 0.40821073]
        self.image_std = [0.5, 0.5, 0.5] if config.siglip else [0.26862954, 0.26130258, 0.27577711]
        self.return_all_hidden_states = config.siglip  # USO reads several SigLIP depths
        self.model = VisionWeights(weights)
        self.patcher = ModelPatcher(self.model)
        self.patcher.is_clip = False
        self.load_device = self.patcher.load_device

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, crop: bool = True) -> Output:
        with self.patcher.use() as holder:
            net = holder.loaded_module
            device = next(net.parameters()).device
            pixels = preprocess(image.to(device), size=self.image_size, mean=tuple(self.image_mean),
                                std=tuple(self.image_std), crop=crop).float()
            last, hidden, embeds = net(pixels, intermediate="all" if self.return_all_hidden_states else -2)
        out = Output()
        out["last_hidden_state"] = last.cpu()
        out["image_embeds"] = embeds.cpu()
        if self.return_all_hidden_states:
            out["all_hidden_states"] = hidden.cpu()
            out["penultimate_hidden_states"] = out["all_hidden_states"][:, -2]
        else:
            out["penultimate_hidden_states"] = hidden.cpu()
        out["mm_projected"] = None
        return out

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.patcher.model_state_dict()

    def load_sd(self, sd: dict[str, torch.Tensor]) -> Any:
        raise NotImplementedError("comfy-kernel loads CLIP vision models from files (CLIPVisionLoader)")


def _weights(path: str, prefix: str, config: VisionConfig, keys: frozenset[str], openclip: bool) -> WeightsSource:
    from .devices import storage_dtype

    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        with torch.device("meta"):
            net = CLIPVisionModel(config)
        return load_module(net, sd, f"CLIP vision ({config.name})")

    wanted = _network_keys(config)
    rename = None if openclip else (lambda k: k if k in wanted else None)
    convert = openclip_to_hf if openclip else None
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#clip_vision", read=part_reader(path, prefix, dtype, rename,
                                                                                             convert),
                         build=build, keys=keys, size=part_size(path, prefix, torch.float16), dtype=dtype)


_KEYS: dict[str, frozenset[str]] = {}


def _network_keys(config: VisionConfig) -> frozenset[str]:
    if config.name not in _KEYS:
        with torch.device("meta"):
            _KEYS[config.name] = frozenset(CLIPVisionModel(config).state_dict())
    return _KEYS[config.name]


def from_shapes(path: str, shapes: dict[str, tuple[int, ...]], prefix: str = "",
                openclip: bool = False) -> ClipVisionModel | None:
    """The CLIP vision model stored under ``prefix`` (OpenCLIP names when ``openclip``), or None."""
    hf = openclip_shapes(shapes, prefix) if openclip else {k[len(prefix):]: v for k, v in shapes.items()
                                                           if k.startswith(prefix)}
    config = config_from_keys(hf)
    if config is None:
        return None
    wanted = _network_keys(config)
    missing = sorted(wanted - set(hf))
    if missing:
        raise UnsupportedClipVision(f"{base_name(path)}: {len(missing)} CLIP vision weights missing, e.g. {missing[:3]}")
    return ClipVisionModel(config, _weights(path, prefix, config, wanted, openclip))


def load(path: str) -> ClipVisionModel:
    """CLIPVisionLoader: a standalone CLIP vision file (Hugging Face or OpenCLIP ``visual.`` layout)."""
    shapes = tensor_shapes(path)
    if "visual.transformer.resblocks.0.attn.in_proj_weight" in shapes:
        model = from_shapes(path, shapes, "visual.", openclip=True)
    else:
        model = from_shapes(path, shapes)
    if model is None:
        kind = "a DINOv2 or SigLIP image encoder" if any(".layer_scale" in k or "siglip" in k for k in shapes) \
            else "no supported CLIP vision model"
        raise UnsupportedClipVision(f"{base_name(path)}: {kind} (ViT-L/14, ViT-L/14-336, ViT-H/14, ViT-bigG/14 "
                                    "and SigLIP so400m/14-384 are supported)")
    return model
