"""HunyuanVideo 1.5: the transformer (T2V, I2V, 1080p super-resolution), Qwen2.5-VL 7B + byT5 text encoders, its VAE.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors and the ``hunyuan_video_15`` CLIP type
when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import detect, models, text, vae

    detection.ARCHITECTURES["hunyuan_video"] = detect.transformer_config
    detection.MODEL_CONFIGS.extend(models.CONFIGS)
    detection.VAES.append(detection.VAEKind("hunyuan_video15", detect.is_vae, vae.hunyuan_video15_vae))
    clip_types["hunyuan_video_15"] = text.load_hunyuan_video15_clip
