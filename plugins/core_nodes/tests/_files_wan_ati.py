"""Wan ATI's node inputs (motion tracks, start images, a stand-in VAE) and ComfyUI's recorded outputs.

``data/wan_ati/reference.npz`` was recorded from ComfyUI 0.3.64's
``WanTrackToVideo`` with the inputs made here (``data/wan_ati/record.py``
says how), so this module imports nothing of this project at its top: the
recorder runs it in ComfyUI's environment. ATI's transformer is Wan 2.1
I2V's; its random-weight file for the server test is written lazily.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "wan_ati" / "reference.npz"
VERSION = "v1"


def random_track(rng: np.random.Generator, points: int, width: int, height: int) -> list[dict[str, int]]:
    """A random walk of ``points`` integer pixel positions starting inside a ``width`` x ``height`` frame."""
    start = rng.uniform([0, 0], [width, height])
    steps = rng.normal(0, 1.5, (points, 2)).cumsum(axis=0) + rng.normal(0, 0.4, 2) * np.arange(points)[:, None]
    return [{"x": int(round(x)), "y": int(round(y))} for x, y in start + steps]


def tracks_json() -> dict[str, str]:
    """The ``tracks`` strings per case: one track; three (short, full, over-long); two batch items."""
    rng = np.random.default_rng(13)
    one = random_track(rng, 121, 48, 32)
    three = [random_track(rng, 30, 48, 32), random_track(rng, 121, 48, 32), random_track(rng, 140, 48, 32)]
    batches = [[random_track(rng, 80, 48, 32)], [random_track(rng, 121, 48, 32), random_track(rng, 60, 48, 32)]]
    return {"single": json.dumps(one), "three": json.dumps(three).replace('"', "'"), "batches": json.dumps(batches)}


#: the node's arguments per case (tracks from ``tracks_json()``); the temperatures are low for these tiny
#: latents (the default, 220, suits grids of 100 latents across: here tracks would touch no latent)
NODE_CASES: dict[str, dict[str, Any]] = {
    "single": dict(width=48, height=32, length=9, batch_size=1, temperature=3.0, topk=2),
    "three": dict(width=48, height=32, length=13, batch_size=1, temperature=10.0, topk=1),
    "batches": dict(width=48, height=32, length=9, batch_size=3, temperature=1.5, topk=3),
}


def start_images() -> torch.Tensor:
    """[2, 20, 30, 3]: start images (the node takes up to batch_size of them) fitted to 48x32."""
    return torch.rand(2, 20, 30, 3, generator=torch.Generator().manual_seed(14))


class StubVAE:
    """Latents [1, 16, (frames - 1) / 4 + 1, h / 8, w / 8]: the 8x8 block means of every fourth frame, each
    of the 16 channels a different multiple of them."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        blocks = torch.nn.functional.avg_pool2d(pixels[::4].movedim(-1, 1), 8).mean(dim=1)
        gains = torch.linspace(-1.0, 2.0, 16).view(1, 16, 1, 1, 1)
        return (blocks[None, None] * gains + 0.1 * gains ** 2).contiguous()


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def ati_file() -> Path:
    """Wan 2.1 I2V's layout (the tiny one of ``_files_wan``) in plain fp8, as ``Wan2_1-I2V-ATI-14B_fp8_e4m3fn``."""
    from _files_wan import transformer_sd
    from _random_weights import cached_file, fp8_state_dict

    return cached_file(f"{VERSION}-wan_ati_fp8.safetensors", lambda: fp8_state_dict(transformer_sd("i2v", seed=3)))
