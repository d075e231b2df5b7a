"""Inputs of the Wan-Move checks, shared by ``test_family_wan_move.py`` and ``data/wan_move/record.py``.

Each case is a node's keyword arguments (tensors made from fixed seeds). The
track sets cross one another, leave the picture and hide for some frames, so
the shuffled overwrites, the skipped points and the bottom-right quirk of a
track hidden in the first frame all take part. ``TRACK_SEED`` seeds torch's
global generator before WanMoveTrackToVideo, which shuffles with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "wan_move" / "reference.npz"
TRACK_SEED = 1
#: GenerateTracks' arguments per case
GENERATE = {
    "straight": dict(width=64, height=48, start_x=0.1, start_y=0.2, mid_x=0.5, mid_y=0.5, end_x=0.9, end_y=0.8,
                     num_frames=9, num_tracks=3, track_spread=0.05, bezier=False, interpolation="linear"),
    "bezier": dict(width=96, height=64, start_x=0.05, start_y=0.9, mid_x=0.2, mid_y=0.05, end_x=0.95, end_y=0.5,
                   num_frames=13, num_tracks=4, track_spread=0.1, bezier=True, interpolation="ease_in_out"),
    "ease_in": dict(width=720, height=480, start_x=0.48, start_y=0.97, mid_x=0.88, mid_y=0.72, end_x=0.96,
                    end_y=0.16, num_frames=81, num_tracks=7, track_spread=0.017, bezier=True, interpolation="ease_in"),
    "ease_out": dict(width=64, height=48, start_x=0.7, start_y=0.1, mid_x=0.5, mid_y=0.5, end_x=0.2, end_y=0.6,
                     num_frames=9, num_tracks=2, track_spread=0.2, bezier=False, interpolation="ease_out"),
    "still": dict(width=64, height=48, start_x=0.5, start_y=0.5, mid_x=0.5, mid_y=0.5, end_x=0.5, end_y=0.5,
                  num_frames=9, num_tracks=3, track_spread=0.1, bezier=False, interpolation="constant"),
}


def coords_json() -> str:
    """Three tracks of 9 points: one crossing the picture left to right from outside it (hidden in the first
    frame), one wandering, one meeting the first in latent cell (3, 3) of latent frame 1 from elsewhere."""
    g = np.random.default_rng(8)
    first = [{"x": -6 + 9 * i, "y": 20 + i} for i in range(9)]
    second = [{"x": float(x), "y": float(y)} for x, y in zip(g.uniform(0, 64, 9), g.uniform(0, 48, 9), strict=True)]
    third = [{"x": 50 - 4.75 * i, "y": 40 - 3.75 * i} for i in range(9)]
    return json.dumps([first, second, third])


def single_track_json() -> str:
    return json.dumps([{"x": 10 + 2 * i, "y": 30 - i} for i in range(7)])


def frame_mask() -> torch.Tensor:
    """[9, 4, 4]: frames 0, 3 and 4 empty (hidden), the others with a pixel set."""
    mask = torch.zeros(9, 4, 4)
    for f in (1, 2, 5, 6, 7, 8):
        mask[f, f % 4, (f * 3) % 4] = 1.0
    return mask


def start_image() -> torch.Tensor:
    return torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(9))


def frames() -> torch.Tensor:
    """[3, 48, 64, 3]: three images under nine frames of tracks (each shown three times)."""
    return torch.rand(3, 48, 64, 3, generator=torch.Generator().manual_seed(10))


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}
