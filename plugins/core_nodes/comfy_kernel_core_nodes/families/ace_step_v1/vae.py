"""ACE-Step 1.0's audio VAE ("MusicDCAE"): 44.1 kHz stereo <-> latents [B, 8, 16, samples / 4096].

Encoding takes the log-mel spectrogram of each channel (vocoder.py), maps
its range [-11, 3] to [-1, 1] and compresses it with the DC-AE (dcae.py), whose
output is shifted by 1.9091 and scaled by 0.1786. Decoding inverts the latent
scaling, decodes the spectrogram and vocodes each channel. There is no
posterior to sample: the encoder is deterministic.

The checkpoint keeps both networks under ``vae.`` (``vae.dcae.encoder...``,
``vae.vocoder.backbone...``); module names are those keys. Weight-normalised
convolutions are read from either spelling, ``weight_g`` / ``weight_v`` or
torch's ``parametrizations.weight.original0`` / ``original1``. The file's
Hann window and mel filters are not loaded: they are fixed functions of the
transform's settings, computed in float32 here, whereas a copy read at a
half-precision storage dtype would cost the encoder accuracy (in bfloat16,
on the test model, 16% of the largest latent against 1% with float32 filters;
ComfyUI, which casts them with the model, is 20% off its float32 result).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model.detection import Shapes
from ...model.quant import network_weights
from ...model.vae import AudioVAE, VAEModel
from .dcae import DCAE, DCAELayout, dcae_layout
from .vocoder import HOP_LENGTH, SAMPLE_RATE, Vocoder, VocoderLayout, vocoder_layout

#: the log-mel range mapped to [-1, 1] before encoding
MEL_MIN, MEL_MAX = -11.0, 3.0
LATENT_SCALE, LATENT_SHIFT = 0.1786, -1.9091
#: samples per latent frame: the DC-AE's 8x on top of the 512-sample hop
SAMPLES_PER_LATENT = 8 * HOP_LENGTH


def is_ace_v1_vae(shapes: Shapes, prefix: str = "") -> bool:
    """The DC-AE over mel spectrograms with its ConvNeXt + HiFi-GAN vocoder (the vocoder's ConvNeXt stem is
    what ComfyUI recognises it by; no other audio VAE has a DC-AE)."""
    return prefix + "vocoder.backbone.channel_layers.0.0.bias" in shapes \
        and prefix + "dcae.encoder.conv_in.weight" in shapes and prefix + "dcae.decoder.conv_out.weight" in shapes


def layouts(shapes: Shapes, prefix: str = "") -> tuple[DCAELayout, VocoderLayout]:
    """Both networks' layouts, read from the shapes (either weight-norm spelling)."""
    local = {name: v for k, v in shapes.items() if k.startswith(prefix) and (name := module_key(k[len(prefix):]))}
    return dcae_layout(local, "dcae."), vocoder_layout(local, "vocoder.")


def module_key(key: str) -> str | None:
    """A file key -> the module's (weight norms as ``weight_g`` / ``weight_v``); None for the mel buffers."""
    if key.startswith("vocoder.mel_transform."):
        return None
    return key.replace(".parametrizations.weight.original0", ".weight_g") \
        .replace(".parametrizations.weight.original1", ".weight_v")


class MusicDCAE(nn.Module):
    """``encode_raw(waveform [B, C, samples]) -> latent [B, 8, 16, samples / 4096]``; ``decode_raw`` back."""

    def __init__(self, ops: Any, dcae: DCAELayout = DCAELayout(), vocoder: VocoderLayout = VocoderLayout(),
                 compute: torch.dtype | None = None) -> None:
        super().__init__()
        self.dcae = DCAE(ops, dcae)
        self.vocoder = Vocoder(ops, vocoder)
        self.compute_dtype = compute

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.dcae.encoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.dcae.encoder.conv_in.weight.device

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveform [B, C, samples] -> log-mel [B, C, n_mels, samples / 512] (float32)."""
        b, c, n = audio.shape
        return self.vocoder.mel_transform(audio.reshape(b * c, n)).unflatten(0, (b, c))

    def encode_raw(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio padded with silence to whole latent frames, then mel, normalised, compressed."""
        audio = audio.to(self.device)
        if audio.shape[-1] % SAMPLES_PER_LATENT:
            audio = F.pad(audio, (0, SAMPLES_PER_LATENT - audio.shape[-1] % SAMPLES_PER_LATENT))
        mel = ((self.mel(audio) - MEL_MIN) / (MEL_MAX - MEL_MIN) - 0.5) / 0.5
        latents = torch.cat([self.dcae.encoder(m[None].to(self.dtype)) for m in mel])
        return (latents - LATENT_SHIFT) * LATENT_SCALE

    def decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent [B, 8, 16, L] -> waveform [B, C, L x 4096]."""
        latent = latent.to(self.device, self.dtype) / LATENT_SCALE + LATENT_SHIFT
        out = []
        for z in latent:
            mel = (self.dcae.decoder(z[None]) * 0.5 + 0.5) * (MEL_MAX - MEL_MIN) + MEL_MIN
            out.append(self.vocoder.decode(mel[0])[:, 0])
        return torch.stack(out)


class AceV1AudioVAE(AudioVAE):
    """Waveforms [B, T, channels] at 44.1 kHz <-> latents [B, 8, 16, T / 4096] (ComfyUI's VAE for this model)."""

    audio_sample_rate = SAMPLE_RATE

    @torch.no_grad()
    def encode(self, pixel_samples: torch.Tensor) -> torch.Tensor:
        """Each clip centre-cropped to whole latent frames, as ComfyUI crops it (shorter clips are padded
        to one frame instead); mono is duplicated to stereo."""
        n = pixel_samples.shape[1]
        usable = max(n // SAMPLES_PER_LATENT * SAMPLES_PER_LATENT, min(n, SAMPLES_PER_LATENT))
        start = (n - usable) // 2
        audio = pixel_samples[:, start: start + usable].movedim(-1, 1)
        if audio.shape[1] < self.output_channels:
            audio = audio.expand(-1, self.output_channels, -1)
        with self.patcher.use() as model:
            net = model.loaded_module
            out = [net.encode_raw(audio[i: i + 1]).float().cpu() for i in range(audio.shape[0])]
        return torch.cat(out)


def ace_v1_vae(path: str, prefix: str, shapes: Shapes) -> AceV1AudioVAE:
    """The VAE under ``prefix`` of ``path`` (``vae.`` in the checkpoint, nothing in a VAE file)."""
    dcae, vocoder = layouts(shapes, prefix)
    weights = network_weights(path, prefix, shapes, "ACE-Step 1.0 audio VAE", "vae",
                              lambda ops, compute: MusicDCAE(ops, dcae, vocoder, compute), rename=module_key)
    return AceV1AudioVAE(first_stage_model=VAEModel(weights), latent_channels=dcae.latent_channels,
                         downscale_ratio=SAMPLES_PER_LATENT, output_channels=dcae.in_channels, latent_dim=2)
