"""LTX-Video 0.9 (Lightricks' 2B video DiT, 0.9.0 to 0.9.5+): the transformer as a sampling model, its causal
video VAE, and the ``ltxv`` CLIP type's T5-XXL encoder. The LTXV nodes the templates use (empty latent,
conditioning, image-to-video, scheduler) are shared with LTX-2 and live in ``families/ltx2``.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors when a loader first needs them. Families
register in name order, so LTX-2's ``ltxv`` loader (Gemma 3) is there to be
wrapped: a T5 file loads here, anything else goes on to it.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import detect, models, text, vae

    detection.ARCHITECTURES["ltxv"] = detect.transformer_config
    detection.MODEL_CONFIGS.extend(models.CONFIGS)
    detection.VAES.append(detection.VAEKind("ltxv_video", detect.is_video_vae, vae.ltxv_vae))
    clip_types["ltxv"] = text.ltxv_clip_loader(clip_types.get("ltxv"))
