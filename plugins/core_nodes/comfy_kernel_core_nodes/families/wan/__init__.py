"""Wan 2.1 / 2.2 video models: T2V (Phantom too), I2V (ATI, Wan-Move and InfiniteTalk too), the 5B TI2V, VACE, Fun camera, S2V, HuMo,
Animate; umt5-xxl text encoder; wav2vec2 and Whisper audio encoders; Wan 2.1 and 2.2 VAEs.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors and the ``wan`` CLIP type when a loader
first needs them. The Wan 2.1 VAE's detector is registered by Qwen-Image,
which shares it.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import detect, models, text, vae

    detection.ARCHITECTURES["wan"] = detect.transformer_config
    detection.MODEL_CONFIGS.extend(models.CONFIGS)
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("umt5xxl", detect.umt5_prefix))
    detection.VAES.append(detection.VAEKind("wan22", detect.is_wan22_vae, vae.wan22_vae))
    clip_types["wan"] = text.load_wan_clip
