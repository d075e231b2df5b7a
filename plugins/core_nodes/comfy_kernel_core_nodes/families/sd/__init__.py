"""Stable Diffusion's UNet family: SD1.x (SD2.x and SDXL share this architecture and join it here).

Registers the UNet layout detector, the supported models, the CLIP-L text
encoder and the 4-channel KL VAE with the model detection registry.
"""

from __future__ import annotations

from ...model import detection
from . import detect, models, text, vae

detection.ARCHITECTURES["unet"] = detect.unet_config
detection.MODEL_CONFIGS.extend([models.SD15])
detection.TEXT_ENCODERS.append(detection.TextEncoderKind("clip_l", text.clip_l_prefix))
detection.VAES.append(detection.VAEKind("kl4", vae.is_kl4, vae.kl_vae))
