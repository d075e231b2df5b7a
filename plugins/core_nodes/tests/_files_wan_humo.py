"""A tiny HuMo transformer and Whisper encoder, their seeded weights, inputs and ComfyUI's recorded outputs.

``data/wan_humo/reference.npz`` was recorded from ComfyUI 0.3.64's
``HumoWanModel``, ``WhisperLargeV3`` and ``WanHuMoImageToVideo`` with the
weights and inputs made here (``data/wan_humo/record.py`` says how), so this
module imports nothing of this project at its top: the recorder runs it in
ComfyUI's environment. The file writers for the server test import the
project lazily.

The HuMo model is 256 wide (two heads of 128), three blocks, 128-wide text;
its audio side is cut down too (ComfyUI's classes built with smaller sizes):
Whisper states 128 wide, a 64-wide projection, 16 audio tokens of 96 per
latent frame. The Whisper encoder is large v3's layout (128 mel bands, 1500
positions, 32 blocks, so it gives the 33 states HuMo's node averages) at 128
wide with two heads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _files_wan_s2v import random_weights

REFERENCE = Path(__file__).parent / "data" / "wan_humo" / "reference.npz"
VERSION = "v1"

#: ComfyUI's ``HumoWanModel(**HUMO)``
HUMO = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=3, text_dim=128, in_dim=16, out_dim=16, freq_dim=256)
#: the audio side the recorder builds in place of the full-size one (ComfyUI's ``AudioProjModel`` arguments;
#: the blocks' ``AudioCrossAttentionWrapper`` take ``output_dim`` as their key / value width)
AUDIO = dict(seq_len=8, blocks=5, channels=128, intermediate_dim=64, output_dim=96, context_tokens=16)
#: ComfyUI's ``WhisperLargeV3(**WHISPER)``
WHISPER = dict(n_mels=128, n_audio_ctx=1500, n_audio_state=128, n_audio_head=2, n_audio_layer=32)
#: Whisper states kept whole in the recording, and the positions kept of them (the sound, then every 50th)
WHISPER_LAYERS = (1, 32)
WHISPER_POSITIONS = tuple(range(40)) + tuple(range(50, 1500, 50))
#: (video length, audio samples) of the node cases: a short clip; a clip longer than the (cut) sound
NODE_CASES = {"short": (9, 19200), "long": (33, 12800)}


def transformer_inputs() -> dict[str, dict[str, torch.Tensor]]:
    """Forward inputs per case: audio and reference at a batch of two; audio only on a 6x10 latent; the
    reference only; the node's all-zero audio (one frame longer than the video) with a reference; text only
    with odd sizes (padding)."""
    g = torch.Generator().manual_seed(8)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g)

    return {
        "full": dict(x=rnd(2, 16, 3, 8, 8), timestep=torch.tensor([900.0, 300.0]), context=rnd(2, 7, 128),
                     audio_embed=rnd(2, 3, 8, 5, 128), reference_latent=rnd(2, 16, 1, 8, 8)),
        "audio": dict(x=rnd(1, 16, 2, 6, 10), timestep=torch.tensor([500.0]), context=rnd(1, 5, 128),
                      audio_embed=rnd(1, 2, 8, 5, 128)),
        "reference": dict(x=rnd(1, 16, 2, 4, 6), timestep=torch.tensor([700.0]), context=rnd(1, 6, 128),
                          reference_latent=rnd(1, 16, 1, 4, 6)),
        "silence": dict(x=rnd(1, 16, 2, 8, 8), timestep=torch.tensor([250.0]), context=rnd(1, 4, 128),
                        audio_embed=torch.zeros(1, 3, 8, 5, 128), reference_latent=rnd(1, 16, 1, 8, 8)),
        "text": dict(x=rnd(1, 16, 2, 5, 7), timestep=torch.tensor([100.0]), context=rnd(1, 4, 128)),
    }


def speech() -> torch.Tensor:
    """[1, 2, 9600]: 0.6 s of stereo at 16 kHz (a gliding tone, a second tone, some noise)."""
    t = torch.arange(9600) / 16000
    noise = 0.05 * torch.randn(2, 9600, generator=torch.Generator().manual_seed(9))
    glide = 0.4 * torch.sin(2 * torch.pi * (200 + 300 * t) * t)
    return (torch.stack([glide, 0.3 * torch.sin(2 * torch.pi * 330 * t)]) + noise)[None]


def whisper_states() -> torch.Tensor:
    """Stand-in Whisper states [33 layers, 60 frames (1.2 s), 8] for the node's audio windows."""
    return torch.randn(33, 60, 8, generator=torch.Generator().manual_seed(10))


def encoder_output(samples: int) -> dict[str, Any]:
    states = whisper_states()
    return {"encoded_audio": states[-1:], "encoded_audio_all_layers": tuple(s[None] for s in states),
            "audio_samples": samples}


def reference_image() -> torch.Tensor:
    """[2, 20, 30, 3]: two images (the node takes the first) to be fitted to 32x48."""
    return torch.rand(2, 20, 30, 3, generator=torch.Generator().manual_seed(11))


class StubVAE:
    """Latents [1, 16, (frames - 1) / 4 + 1, h / 8, w / 8]: each 8x8 block's mean of each channel, repeated."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        n, h, w, c = pixels.shape
        blocks = torch.nn.functional.avg_pool2d(pixels[:1].movedim(-1, 1), 8)
        return blocks.repeat(1, 16 // c + 1, 1, 1)[:, :16].unsqueeze(2).repeat(1, 1, (n - 1) // 4 + 1, 1, 1)


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def recorded_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes ComfyUI's network of ``name`` ("humo" or "whisper") had when recording."""
    return {k: tuple(v) for k, v in json.loads(str(reference()[f"{name}_shapes"])).items()}


def humo_file(fp8: bool = False, seed: int = 0) -> Path:
    """The tiny HuMo model in ComfyUI's file layout (fp16, or fp8 like ``humo_17B_fp8_e4m3fn``)."""
    from _random_weights import cached_file, fp8_state_dict

    def make() -> dict[str, torch.Tensor]:
        sd = {k: v.half() for k, v in random_weights(recorded_shapes("humo"), seed).items()}
        return fp8_state_dict(sd) if fp8 else sd

    return cached_file(f"{VERSION}-wan_humo_{'fp8' if fp8 else 'fp16'}_{seed}.safetensors", make)


def whisper_file() -> Path:
    """The tiny Whisper encoder as ``whisper_large_v3_fp16`` stores it: under ``model.encoder.``, with (a
    token of) the decoder beside it."""
    from _random_weights import cached_file

    def make() -> dict[str, torch.Tensor]:
        sd = {"model." + k: v.half() for k, v in random_weights(recorded_shapes("whisper")).items()}
        sd["model.decoder.embed_positions.weight"] = torch.zeros(448, 128, dtype=torch.float16)
        return sd

    return cached_file(f"{VERSION}-whisper_tiny_fp16.safetensors", make)
