"""Stable Diffusion's UNet family: SD1.x, SD2.x (512 eps, 768 v-prediction) and SDXL (base and refiner).

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the UNet layout detector, the supported models, the text
encoders, the 4-channel KL VAE and the CLIP types when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def _first(*prefixes: str | None) -> str | None:
    """The first prefix found ("" , a file's top level, counts as found)."""
    return next((p for p in prefixes if p is not None), None)


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from ...components.kl_vae_layout import vae_key_layout
    from . import detect, diffusers_layout, models, text, text_h, text_xl, vae

    detection.ARCHITECTURES["unet"] = detect.unet_config
    detection.MODEL_CONFIGS.extend([models.SD15, models.SD20, models.SDXL, models.SDXLRefiner])
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("clip_l", text.clip_l_prefix))
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind(
        "clip_g", lambda shapes: _first(text_xl.hf_g_prefix(shapes), text_xl.openclip_g_prefix(shapes))))
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind(
        "clip_h", lambda shapes: _first(text_h.openclip_h_prefix(shapes), text_h.hf_h_prefix(shapes))))
    detection.VAES.append(detection.VAEKind("kl4", vae.is_kl4, vae.kl_vae))
    detection.KEY_LAYOUTS.extend([diffusers_layout.unet_key_layout, vae_key_layout])
    clip_types["stable_diffusion"] = text.load_sd1_clip
    clip_types["sdxl"] = text_xl.load_sdxl_clip
