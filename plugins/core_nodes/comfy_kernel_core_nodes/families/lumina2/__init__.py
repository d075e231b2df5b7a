"""Lumina-Image 2.0 and Z-Image: the NextDiT transformer, their text encoders (Gemma 2 2B, Qwen3 4B), Flux latents.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors and the ``lumina2`` CLIP type when a
loader first needs them. The 16-channel autoencoder (``ae.safetensors``) is
Flux's.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import detect, gemma, models, text

    detection.ARCHITECTURES["lumina2"] = detect.transformer_config
    detection.MODEL_CONFIGS.extend([models.ZImage, models.Lumina2])
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("qwen3_4b", detect.qwen3_4b_prefix, text.z_image_clip))
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("gemma2_2b", detect.gemma2_2b_prefix, gemma.gemma_clip))
    clip_types["lumina2"] = text.load_lumina2_clip
