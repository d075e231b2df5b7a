"""Stable Diffusion's UNet family: SD1.x, SD2.x (512 eps, 768 v-prediction) and SDXL (base and refiner).

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the UNet layout detector, the supported models, the text
encoders, the 4-channel KL VAE and the CLIP types when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import detect, models, text, text_h, text_xl, vae

    detection.ARCHITECTURES["unet"] = detect.unet_config
    detection.MODEL_CONFIGS.extend([models.SD15, models.SD20, models.SDXL, models.SDXLRefiner])
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("clip_l", text.clip_l_prefix))
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind(
        "clip_g", lambda shapes: text_xl.hf_g_prefix(shapes) or text_xl.openclip_g_prefix(shapes)))
    detection.TEXT_ENCODERS.append(detection.TextEncoderKind("clip_h", text_h.openclip_h_prefix))
    detection.VAES.append(detection.VAEKind("kl4", vae.is_kl4, vae.kl_vae))
    clip_types["stable_diffusion"] = text.load_sd1_clip
    clip_types["sdxl"] = text_xl.load_sdxl_clip
