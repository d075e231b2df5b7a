"""HiDream-I1 and HiDream-E1: the mixture-of-experts DiT, four text encoders (CLIP-L, CLIP-G, T5-XXL, Llama 3.1 8B).

The VAE is Flux's (registered by families/flux). Importing this package stays
light (the node list is read at start-up); :func:`register` adds the
detectors and the ``hidream`` CLIP type when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import detect, models, text

    detection.ARCHITECTURES["hidream"] = detect.transformer_config
    detection.MODEL_CONFIGS.append(models.HiDream)
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("llama3", detect.llama3_prefix))
    clip_types["hidream"] = text.load_hidream_clip
