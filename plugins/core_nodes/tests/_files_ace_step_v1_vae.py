"""A small ACE-Step 1.0 audio VAE (MusicDCAE: DC-AE + ADaMoS vocoder) with seeded random weights.

``data/ace_step_v1/vae_reference.npz`` was recorded from ComfyUI's MusicDCAE
built with :data:`DCAE_CONFIG` and :data:`VOCODER_CONFIG` and loaded with
:func:`vae_weights` (``data/ace_step_v1/record_vae.py`` says how). It also
lists the state dict's shapes, so the weights are rebuilt here without
ComfyUI. Only torch is imported at module level: the recorder runs this in
ComfyUI's environment.

The small sizes keep the released structure (four DC-AE stages, EfficientViT
at the deepest with 32-wide heads, a four-stage ConvNeXt, a HiFi-GAN making
the 512x hop) at a fraction of the widths; encoder and decoder differ in
width and depth, and the vocoder's upsampling rates differ per stage, so the
layout detection has something to read.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch

REFERENCE = Path(__file__).parent / "data" / "ace_step_v1" / "vae_reference.npz"
SEED = 0
SAMPLE_RATE = 44100

#: ComfyUI's ``AutoencoderDC(**DCAE_CONFIG)`` (``MusicDCAE(dcae_config=...)``)
DCAE_CONFIG = {
    "in_channels": 2, "latent_channels": 8, "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": (16, 32, 32, 64), "decoder_block_out_channels": (16, 16, 32, 64),
    "encoder_layers_per_block": (1, 1, 2, 1), "decoder_layers_per_block": (2, 1, 1, 2),
    "encoder_qkv_multiscales": ((), (), (5,), (5,)), "decoder_qkv_multiscales": ((), (), (5,), (5,)),
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv",
}
#: ComfyUI's ``ADaMoSHiFiGANV1(**VOCODER_CONFIG)`` (``MusicDCAE(vocoder_config=...)``)
VOCODER_CONFIG = {
    "depths": [1, 1, 2, 1], "dims": [16, 24, 32, 48], "num_mels": 48, "upsample_initial_channel": 64,
    "upsample_rates": (8, 4, 4, 4), "upsample_kernel_sizes": (16, 8, 8, 8),
    "resblock_kernel_sizes": (3, 7), "resblock_dilation_sizes": ((1, 3, 5), (1, 3, 5)),
}
#: the stored mel buffers (the released file keeps them; the weights below leave them out)
MEL_KEYS = ("vocoder.mel_transform.spectrogram.window", "vocoder.mel_transform.mel_scale.fb")


def file_name(key: str) -> str:
    """ComfyUI's module name of a weight-normalised tensor -> the checkpoint's (``weight_g`` / ``weight_v``)."""
    return key.replace(".parametrizations.weight.original0", ".weight_g") \
        .replace(".parametrizations.weight.original1", ".weight_v")


@lru_cache(maxsize=1)
def comfy_shapes() -> dict[str, tuple[int, ...]]:
    """The recorded state-dict shapes of ComfyUI's small MusicDCAE (its own key names)."""
    import numpy as np

    with np.load(REFERENCE) as data:
        return {k: tuple(v) for k, v in json.loads(str(data["shapes"])).items()}


def _random(key: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=g)
    last = key.rsplit(".", 1)[-1]
    if last == "weight_g":  # the upsamplers spread their input thin: larger gains keep the waveform audible
        return (0.8 + 0.1 * x).abs() * (3.0 if ".ups." in key or "conv_post" in key else 1.0)
    if last == "gamma":
        return 0.5 + 0.1 * x
    if last == "bias":
        return 0.05 * x
    if len(shape) == 1:  # norm scales
        return 1 + 0.1 * x
    return x / math.prod(shape[1:]) ** 0.5


def vae_weights(seed: int = SEED, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """The learned tensors under the checkpoint's names (no ``vae.`` prefix, no mel buffers), float32
    values that float16 holds exactly."""
    shapes = comfy_shapes() if shapes is None else shapes
    g = torch.Generator().manual_seed(seed)
    named = sorted((file_name(k), tuple(v)) for k, v in shapes.items() if k not in MEL_KEYS)
    return {k: _random(k, shape, g).half().float() for k, shape in named}


def vae_state_dict(seed: int = SEED, mel_buffers: bool = True) -> dict[str, torch.Tensor]:
    """The VAE as ``ace_step_v1_3.5b.safetensors`` keeps it: under ``vae.``, weight norms as ``weight_g`` /
    ``weight_v``, with the Hann window and mel filters unless ``mel_buffers`` is False."""
    sd = vae_weights(seed)
    if mel_buffers:
        from comfy_kernel_core_nodes.families.ace_step_v1.vocoder import hann_window, mel_filters

        sd[MEL_KEYS[0]] = hann_window().clone()
        sd[MEL_KEYS[1]] = mel_filters().clone()
    return {f"vae.{k}": v for k, v in sd.items()}


def waveform(seconds: float = 0.3) -> torch.Tensor:
    """A deterministic stereo test signal [2, samples] at 44.1 kHz: tones, a chirp and a buzz."""
    t = torch.arange(round(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    left = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.15 * torch.sin(2 * math.pi * 1375 * t + 0.4)
    right = 0.25 * torch.sin(2 * math.pi * (300 + 9000 * t) * t) + 0.1 * torch.sign(torch.sin(2 * math.pi * 97 * t))
    envelope = 0.6 + 0.4 * torch.cos(2 * math.pi * 3 * t)
    return torch.stack([left * envelope, right]).float()


def short_latent() -> torch.Tensor:
    """A [1, 8, 16, 2] latent: two frames, small enough for the quadratic attention path."""
    g = torch.Generator().manual_seed(5)
    return torch.randn(1, 8, 16, 2, generator=g) * 0.5
