"""Qwen-Image and Qwen-Image-Edit: the MMDiT transformer, Qwen2.5-VL 7B as text encoder, the Wan 2.1 VAE.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors and the ``qwen_image`` CLIP type when a
loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from ...components.wan_vae_layout import vae_key_layout
    from . import detect, models, text, vae

    detection.ARCHITECTURES["qwen_image"] = detect.transformer_config
    detection.MODEL_CONFIGS.append(models.QwenImage)
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("qwen25_7b", detect.qwen25_7b_prefix))
    detection.VAES.append(detection.VAEKind("wan21", detect.is_wan21_vae, vae.wan21_vae))
    detection.KEY_LAYOUTS.append(vae_key_layout)
    clip_types["qwen_image"] = text.load_qwen_image_clip
