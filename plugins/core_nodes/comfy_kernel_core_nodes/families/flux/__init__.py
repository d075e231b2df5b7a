"""Flux.1 (dev, schnell, Fill, Kontext), Chroma and Flux.2: their transformers, text encoders and VAEs.

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the transformer layout detector, the supported models,
the T5 and 16-channel VAE detectors and the ``flux`` / ``chroma`` / ``flux2`` CLIP types
when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from ...components import t5
    from . import detect, flux2_text, flux2_vae, models, text, vae

    detection.ARCHITECTURES["flux"] = detect.flux_any_config
    detection.ARCHITECTURES["flux2"] = detect.flux2_config
    detection.MODEL_CONFIGS.extend([models.FluxInpaintConfig, models.FluxSchnellConfig, models.FluxConfig,
                                    models.ChromaConfig, models.Flux2Config])
    detection.VAES.append(detection.VAEKind("flux2", flux2_vae.is_flux2_vae, flux2_vae.flux2_vae))
    if not any(kind.name == "t5xxl" for kind in detection.TEXT_ENCODERS):
        detection.TEXT_ENCODERS.append(detection.TextEncoderKind("t5xxl", t5.t5_prefix))
    if not any(kind.name == "kl16" for kind in detection.VAES):
        detection.VAES.append(detection.VAEKind("kl16", vae.is_kl16, vae.kl16_vae))
    clip_types["flux"] = text.load_flux_clip
    clip_types["chroma"] = text.load_chroma_clip
    clip_types["flux2"] = flux2_text.load_flux2_clip
