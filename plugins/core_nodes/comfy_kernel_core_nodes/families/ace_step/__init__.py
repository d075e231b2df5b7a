"""ACE-Step 1.5 music generation: the DiT with its condition encoder, Qwen3 text encoder and 5 Hz language
model, the 48 kHz Oobleck audio VAE.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors and the ``ace`` CLIP type when a loader
first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import detect, models, text, vae

    detection.ARCHITECTURES["ace_step15"] = detect.transformer_config
    detection.MODEL_CONFIGS.extend(models.CONFIGS)
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("qwen3_ace15", detect.ace15_text_prefix))
    detection.VAES.append(detection.VAEKind("ace15_oobleck", detect.is_ace15_vae, vae.ace15_vae))
    clip_types["ace"] = text.load_ace_clip
