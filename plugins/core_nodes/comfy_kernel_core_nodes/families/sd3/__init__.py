"""Stable Diffusion 3 / 3.5 (Medium, Large): the MMDiT, its three text encoders and the 16-channel VAE.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the MMDiT layout detector, the ``SD3`` supported model,
the T5 and 16-channel VAE detectors (shared with Flux: added once) and the
``sd3`` CLIP type when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from ...components import kl16_vae, t5
    from . import detect, diffusers_layout, models, text

    detection.ARCHITECTURES["mmdit"] = detect.mmdit_config
    detection.KEY_LAYOUTS.append(diffusers_layout.mmdit_key_layout)
    detection.MODEL_CONFIGS.append(models.SD3Config)
    if not any(kind.name == "t5xxl" for kind in detection.TEXT_ENCODERS):
        detection.TEXT_ENCODERS.append(detection.TextEncoderKind("t5xxl", t5.t5_prefix))
    if not any(kind.name == "kl16" for kind in detection.VAES):
        detection.VAES.append(detection.VAEKind("kl16", kl16_vae.is_kl16, kl16_vae.kl16_vae))
    clip_types["sd3"] = text.load_sd3_clip
