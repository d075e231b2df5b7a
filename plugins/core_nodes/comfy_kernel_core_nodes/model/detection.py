"""Which model family a weights file holds, decided from its tensor names and shapes alone.

Families register what they can recognise when their package is imported
(``families/<family>/__init__.py``):

* an *architecture* detector reads a network's layout from the keys under a
  prefix (``unet_config``), and *model configs* (:class:`ModelConfig`
  subclasses) say which layouts are theirs, as ComfyUI's supported-model list
  does; the first config whose ``unet_config`` entries all match wins;
* text encoder and VAE detectors recognise standalone files (CLIPLoader,
  VAELoader) and the parts inside a checkpoint.

Detection works on shapes from the file header, so nothing is loaded to decide.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Shapes = dict[str, tuple[int, ...]]


def count(shapes: Shapes, pattern: str) -> int:
    """How many consecutive indices ``pattern`` (a regex with one group) matches, from 0.

    Families read their depth this way (``layers\\.(\\d+)\\.``): a gap ends the count,
    so a block numbered past a missing one is not counted.
    """
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    n = 0
    while n in found:
        n += 1
    return n

#: architecture name -> detector(shapes, prefix) -> unet_config dict or None
ARCHITECTURES: dict[str, Callable[[Shapes, str], dict[str, Any] | None]] = {}
#: model configs, most specific first within a family
MODEL_CONFIGS: list[type] = []
#: standalone component detectors, tried in order
TEXT_ENCODERS: list[TextEncoderKind] = []
VAES: list[VAEKind] = []
#: layouts of weights folders saved under another library's names (diffusers' UNet and VAE):
#: recognise(shapes) -> folders.KeyLayout or None (see model/folders.py)
KEY_LAYOUTS: list[Callable[[Shapes], Any]] = []

#: prefixes under which checkpoints keep their diffusion model
DIFFUSION_PREFIXES = ("model.diffusion_model.", "model.", "")


@dataclass(frozen=True)
class TextEncoderKind:
    """A kind of text encoder file: ``detect(shapes) -> key prefix or None``.

    ``default_clip(path, prefix, shapes) -> CLIP``, where given, is the CLIP
    ComfyUI builds from such a file whatever CLIP type the loader names,
    when that type has no use for it (a Qwen3 4B file becomes Z-Image's
    encoder under ``ltxv`` or ``stable_diffusion``: ComfyUI picks the
    encoder by the file's keys first).
    """

    name: str
    detect: Callable[[Shapes], str | None]
    default_clip: Callable[..., Any] | None = None


@dataclass(frozen=True)
class VAEKind:
    """A kind of VAE: ``detect(shapes, prefix) -> bool``; ``build(path, prefix, shapes) -> VAE``."""

    name: str
    detect: Callable[[Shapes, str], bool]
    build: Callable[[str, str, Shapes], Any]


class ModelConfig:
    """A supported diffusion model (ComfyUI's ``supported_models_base.BASE``)."""

    architecture = "unet"
    unet_config: dict[str, Any] = {}
    unet_extra_config: dict[str, Any] = {"num_heads": -1, "num_head_channels": 64}
    required_keys: dict[str, Any] = {}
    clip_prefix: list[str] = []
    clip_vision_prefix: str | None = None
    noise_aug_config: Any = None
    sampling_settings: dict[str, Any] = {}
    latent_format: type = object
    vae_key_prefix = ["first_stage_model."]
    text_encoder_key_prefix = ["cond_stage_model."]
    supported_inference_dtypes: list[Any] = []
    memory_usage_factor = 2.0
    manual_cast_dtype: Any = None
    custom_operations: Any = None
    scaled_fp8: Any = None
    optimizations: dict[str, Any] = {"fp8": False}
    family = "unknown"
    #: the CLIPLoader type a diffusers folder's text encoders (text_encoder/, text_encoder_2/) load as
    clip_type = "stable_diffusion"

    @classmethod
    def matches(cls, unet_config: dict[str, Any], shapes: Shapes | None = None) -> bool:
        for key, value in cls.unet_config.items():
            if unet_config.get(key) != value:
                return False
        if shapes is not None:
            for key in cls.required_keys:
                if key not in shapes:
                    return False
        return True

    def __init__(self, unet_config: dict[str, Any]) -> None:
        self.unet_config = {**unet_config, **self.unet_extra_config}
        self.latent_format = type(self).latent_format

    def model_type(self, shapes: Shapes, prefix: str = "") -> Any:
        from .base import ModelType

        return ModelType.EPS

    def inpaint_model(self) -> bool:
        return self.unet_config.get("in_channels", 4) > 4

    def get_model(self, weights: Any, shapes: Shapes, prefix: str = "") -> Any:
        raise NotImplementedError

    def clip_target(self, shapes: Shapes) -> Any:
        return None


_loaded = False


def load_families() -> None:
    """Let every family package register its detectors and CLIP types, once."""
    global _loaded
    if _loaded:
        return
    import sys

    from .. import families
    from .loading import CLIP_TYPES

    for info in sorted(pkgutil.iter_modules(families.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{families.__name__}.{info.name}")
        module.register(sys.modules[__name__], CLIP_TYPES)
    _loaded = True


def unet_config_from(shapes: Shapes, prefix: str) -> tuple[str, dict[str, Any]] | None:
    load_families()
    for name, detect in ARCHITECTURES.items():
        config = detect(shapes, prefix)
        if config is not None:
            return name, config
    return None


def model_config_from(shapes: Shapes, prefix: str) -> ModelConfig | None:
    """The supported model stored under ``prefix``, or None."""
    found = unet_config_from(shapes, prefix)
    if found is None:
        return None
    architecture, unet_config = found
    for cls in MODEL_CONFIGS:
        if cls.architecture == architecture and cls.matches(unet_config, shapes):
            return cls(unet_config)
    return None


def diffusion_prefix(shapes: Shapes) -> str | None:
    """The prefix under which a file keeps a recognisable diffusion model."""
    load_families()
    for prefix in DIFFUSION_PREFIXES:
        if any(detect(shapes, prefix) is not None for detect in ARCHITECTURES.values()):
            return prefix
    return None


def text_encoder_kind(shapes: Shapes) -> tuple[TextEncoderKind, str] | None:
    load_families()
    for kind in TEXT_ENCODERS:
        prefix = kind.detect(shapes)
        if prefix is not None:
            return kind, prefix
    return None


def vae_kind(shapes: Shapes, prefix: str) -> VAEKind | None:
    load_families()
    for kind in VAES:
        if kind.detect(shapes, prefix):
            return kind
    return None
