"""ACE-Step 1.5's audio VAE (``ace_1.5_vae``): the Oobleck autoencoder at 48 kHz, 1920 samples per latent frame."""

from __future__ import annotations

import math

import torch

from ...components.oobleck_vae import OobleckVAE, oobleck_layout
from ...model.detection import Shapes
from ...model.quant import network_weights
from ...model.vae import AudioVAE, VAEModel

SAMPLE_RATE = 48000


class AceStepAudioVAE(AudioVAE):
    """Waveforms [B, T, channels] <-> latents [B, 64, T / ratio]; ``audio_sample_rate`` as ComfyUI's audio VAEs."""

    audio_sample_rate = SAMPLE_RATE

    @torch.no_grad()
    def encode(self, pixel_samples: torch.Tensor) -> torch.Tensor:
        """Waveform [B, T, C] cut to whole latent frames -> the posterior's mean."""
        usable = pixel_samples.shape[1] // self.downscale_ratio * self.downscale_ratio
        audio = pixel_samples[:, :usable].movedim(-1, 1)
        with self.patcher.use() as model:
            net = model.loaded_module
            out = [net.encode_raw(audio[i: i + 1].to(self.device)).float().cpu() for i in range(audio.shape[0])]
        return torch.cat(out)


def ace15_vae(path: str, prefix: str, shapes: Shapes) -> AceStepAudioVAE:
    layout = oobleck_layout(shapes, prefix)
    weights = network_weights(path, prefix, shapes, "ACE-Step 1.5 audio VAE", "vae",
                              lambda ops, compute: OobleckVAE(layout))
    return AceStepAudioVAE(first_stage_model=VAEModel(weights), latent_channels=layout.latent_channels,
                           downscale_ratio=math.prod(layout.strides), output_channels=layout.audio_channels,
                           latent_dim=1)
