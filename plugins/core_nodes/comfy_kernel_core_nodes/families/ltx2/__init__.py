"""LTX-2 (Lightricks' audio + video model): its video VAE, audio VAE + vocoder, the transformer as a sampling
model, and its text encoder (Gemma 3 12B with the checkpoint's text projection; nodes in text_nodes.py).

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import audio_vae, detect, models, text, vae

    detection.ARCHITECTURES["ltxav"] = detect.transformer_config
    detection.MODEL_CONFIGS.extend(models.CONFIGS)
    detection.VAES.append(detection.VAEKind("ltx2_video", detect.is_video_vae, vae.ltx2_video_vae))
    detection.VAES.append(detection.VAEKind("ltx2_audio", detect.is_audio_vae, audio_vae.load_audio_vae))
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("gemma3_12b", text.gemma3_prefix, text.gemma3_clip))
    clip_types["ltxv"] = text.load_ltxv_clip
