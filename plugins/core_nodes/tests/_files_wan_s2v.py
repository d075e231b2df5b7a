"""A tiny Wan 2.2 S2V transformer and wav2vec2 encoder, their seeded weights and ComfyUI's recorded outputs.

``data/wan_s2v/reference.npz`` was recorded from ComfyUI 0.3.64's
``WanModel_S2V``, ``Wav2Vec2Model`` and ``wan_sound_to_video`` with the
weights and inputs made here (``data/wan_s2v/record.py`` says how), so this
module imports nothing of this project at its top: the recorder runs it in
ComfyUI's environment. The file writers for the server test import the
project lazily.

The S2V model is 256 wide (two heads of 128), five blocks, audio injected
after blocks 0 and 4, 128-wide text; the wav2vec2 encoder is the "large"
layout (layer-normed convolutions, pre-norm blocks, normalised input) at 128
wide with 24 blocks, so it feeds the 25 hidden states the S2V model mixes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "wan_s2v" / "reference.npz"
VERSION = "v1"

#: ComfyUI's ``WanModel_S2V(**S2V)`` (its audio encoder always mixes 25 wav2vec2 states)
S2V = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=5, text_dim=128, in_dim=16, out_dim=16, freq_dim=256,
           audio_dim=128, num_audio_token=4, audio_inject_layers=[0, 4], cond_dim=16, enable_adain=True,
           adain_mode="attn_norm", framepack_drop_mode="padd")
#: ComfyUI's ``Wav2Vec2Model(**WAV2VEC2)`` (its convolutions are 512 wide)
WAV2VEC2 = dict(embed_dim=128, num_heads=2, num_layers=24, conv_norm=True, conv_bias=True, do_normalize=True,
                do_stable_layer_norm=True)
#: the hidden states of the encoder kept in the recording (input to the first block, some outputs, the last)
WAV2VEC2_LAYERS = (0, 1, 12, 24)


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights that keep activations near 1; every value exact in float16 (files equal the fp32 reference).

    The S2V layer-mixing weights stay positive (their SiLU is divided by its sum).
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        x = torch.randn(shape, generator=g)
        if key.endswith("casual_audio_encoder.weights"):
            x = 1 + 0.3 * x
        elif key.endswith(("original0", "weight_g")):
            x = 1 + 0.1 * x.abs()
        elif len(shape) == 1 and (key.endswith(".weight") or "norm" in key):
            x = 1 + 0.1 * x
        elif key.endswith(".bias"):
            x = 0.05 * x
        elif key.endswith(("modulation", "padding_tokens", "trainable_cond_mask.weight")):
            x = 0.2 * x
        else:
            x = x / max(x[0].numel(), 1) ** 0.5
        sd[key] = x.half().float()
    return sd


def transformer_inputs() -> dict[str, dict[str, torch.Tensor]]:
    """Forward inputs per case: every conditioning at a batch of two; reference + audio on a 6x10 latent;
    text only with odd sizes (padding); more than 19 motion frames with a reference, no audio."""
    g = torch.Generator().manual_seed(5)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g)

    cases = {
        "full": dict(x=rnd(2, 16, 3, 8, 8), timestep=torch.tensor([900.0, 300.0]), context=rnd(2, 7, 128),
                     audio_embed=rnd(2, 25, 128, 14), reference_latent=rnd(2, 16, 1, 8, 8),
                     reference_motion=rnd(2, 16, 5, 8, 8), control_video=rnd(2, 16, 3, 8, 8)),
        "reference_audio": dict(x=rnd(1, 16, 2, 6, 10), timestep=torch.tensor([500.0]), context=rnd(1, 5, 128),
                                audio_embed=rnd(1, 25, 128, 8), reference_latent=rnd(1, 16, 1, 6, 10)),
        "text": dict(x=rnd(1, 16, 2, 5, 7), timestep=torch.tensor([700.0]), context=rnd(1, 4, 128)),
        "motion": dict(x=rnd(1, 16, 2, 8, 16), timestep=torch.tensor([250.0]), context=rnd(1, 6, 128),
                       reference_latent=rnd(1, 16, 1, 8, 16), reference_motion=rnd(1, 16, 21, 8, 16)),
    }
    return cases


def audio_features() -> torch.Tensor:
    """Stand-in wav2vec2 states [3 layers, 40 frames (0.8 s), 8] for the nodes' audio windows."""
    return torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(6))


def waveform() -> torch.Tensor:
    """[1, 2, 4000]: a quarter second of stereo at 16 kHz (two tones and some noise), for the encoder."""
    t = torch.arange(4000) / 16000
    noise = 0.05 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(7))
    tones = torch.stack([0.4 * torch.sin(2 * torch.pi * 220 * t), 0.3 * torch.sin(2 * torch.pi * 330 * t)])
    return (tones + noise)[None]


def run_network(net: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A recorded case's inputs (``x``, ``timestep``, ``context`` and the variant's keywords) through ``net``."""
    extra = {k: v for k, v in inputs.items() if k not in ("x", "timestep", "context")}
    with torch.no_grad():
        return net(inputs["x"], inputs["timestep"], inputs["context"], **extra)


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def recorded_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes ComfyUI's network of ``name`` ("s2v" or "wav2vec2") had when recording."""
    return {k: tuple(v) for k, v in json.loads(str(reference()[f"{name}_shapes"])).items()}


def s2v_file(fp8_scaled: bool = False, seed: int = 0) -> Path:
    """The tiny S2V model in ComfyUI's file layout (fp16, or scaled fp8 like ``wan2.2_s2v_14B_fp8_scaled``)."""
    from _random_weights import cached_file, fp8_state_dict

    def make() -> dict[str, torch.Tensor]:
        sd = {k: v.half() for k, v in random_weights(recorded_shapes("s2v"), seed).items()}
        return fp8_state_dict(sd, scaled=True) if fp8_scaled else sd

    return cached_file(f"{VERSION}-wan_s2v_{'fp8_scaled' if fp8_scaled else 'fp16'}_{seed}.safetensors", make)


def wav2vec2_file() -> Path:
    """The tiny wav2vec2 encoder as ComfyUI's file stores it (the ``weight_g`` / ``weight_v`` names of the
    position convolution, an unused ``masked_spec_embed``)."""
    from _random_weights import cached_file

    def make() -> dict[str, Any]:
        sd = {k: v.half() for k, v in random_weights(recorded_shapes("wav2vec2")).items()}
        stem = "encoder.pos_conv_embed.conv."
        sd[stem + "weight_g"] = sd.pop(stem + "parametrizations.weight.original0")
        sd[stem + "weight_v"] = sd.pop(stem + "parametrizations.weight.original1")
        return sd

    return cached_file(f"{VERSION}-wav2vec2_tiny_fp16.safetensors", make)
