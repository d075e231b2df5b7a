"""A tiny Wan 2.2 Animate transformer, its seeded weights, the node's inputs and ComfyUI's recorded outputs.

``data/wan_animate/reference.npz`` was recorded from ComfyUI 0.3.64's
``AnimateWanModel`` and ``WanAnimateToVideo`` with the weights and inputs
made here (``data/wan_animate/record.py`` says how), so this module imports
nothing of this project at its top: the recorder runs it in ComfyUI's
environment. The file writer imports the project lazily.

The transformer is 256 wide (two heads of 128), ten blocks (so two face
adapter blocks, after blocks 0 and 5), 128-wide text, 36 input channels.
The motion and face encoders keep their released sizes (ComfyUI fixes
them), so the face crops are 512x512 and the file is about 90 MB in fp16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _files_wan_s2v import random_weights

REFERENCE = Path(__file__).parent / "data" / "wan_animate" / "reference.npz"
VERSION = "v1"

#: ComfyUI's ``AnimateWanModel(**ANIMATE)``
ANIMATE = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=10, text_dim=128, in_dim=36, out_dim=16, freq_dim=256)
#: the positions kept of the recorded face pixels (they are 512x512 per frame)
FACE_STRIDE = (37, 41)


def _rnd(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def transformer_inputs() -> dict[str, dict[str, torch.Tensor]]:
    """Forward inputs per case: everything at a batch of two (two face crops each: fewer face frames than latent
    frames); face only (five crops: more than the latent frames); pose only (longer than the video); text
    only with odd sizes (padding)."""
    g = torch.Generator().manual_seed(21)
    return {
        "full": dict(x=_rnd(g, 2, 36, 3, 4, 4), timestep=torch.tensor([900.0, 300.0]), context=_rnd(g, 2, 7, 128),
                     clip_fea=_rnd(g, 2, 9, 1280), pose_latents=_rnd(g, 2, 16, 2, 4, 4),
                     face_pixel_values=torch.rand(2, 3, 2, 512, 512, generator=g) * 2 - 1),
        "face": dict(x=_rnd(g, 1, 36, 2, 4, 6), timestep=torch.tensor([500.0]), context=_rnd(g, 1, 5, 128),
                     face_pixel_values=torch.rand(1, 3, 5, 512, 512, generator=g) * 2 - 1),
        "pose": dict(x=_rnd(g, 1, 36, 3, 6, 4), timestep=torch.tensor([700.0]), context=_rnd(g, 1, 6, 128),
                     pose_latents=_rnd(g, 1, 16, 3, 6, 4)),
        "text": dict(x=_rnd(g, 1, 36, 2, 5, 7), timestep=torch.tensor([100.0]), context=_rnd(g, 1, 4, 128)),
    }


def animate_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights (exact in float16); the motion encoder's equalised-rate weights are unit normal, as the
    network scales them itself."""
    sd = random_weights(shapes, seed)
    for key, value in sd.items():
        if key.startswith("motion_encoder.enc.") and value.ndim >= 2:
            sd[key] = (value * value[0].numel() ** 0.5).half().float()
    return sd


def blur_kernel() -> torch.Tensor:
    """The fixed filter the released files store at every ``...kernel`` of the motion encoder."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum()


class StubVAE:
    """Frames [n, H, W, 3] -> latents [1, 16, (n - 1) / 4 + 1, H / 8, W / 8]: latent frame 0 is frame 0, frame
    i the mean of frames 4i - 3 .. 4i; each 8x8 block averaged; 16 channels mixed from the three."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.shape[0]
        frames = [pixels[:1].mean(0)] + [pixels[4 * i - 3: 4 * i + 1].mean(0) for i in range(1, (n - 1) // 4 + 1)]
        blocks = torch.nn.functional.avg_pool2d(torch.stack(frames).movedim(-1, 1), 8)
        j = torch.arange(16)
        f = j.to(blocks.dtype).view(1, 16, 1, 1)
        mixed = blocks[:, j % 3] * (1 + f / 16) + f / 10
        return mixed.movedim(0, 1).unsqueeze(0)


class ClipVisionStub:
    """A CLIP_VISION_OUTPUT stand-in (the node passes it on untouched)."""

    penultimate_hidden_states = torch.zeros(1, 3, 1280)


def node_cases() -> dict[str, dict[str, Any]]:
    """WanAnimateToVideo's inputs per case (32x48, 9 or 13 frames)."""
    g = torch.Generator().manual_seed(22)

    def img(n: int, h: int = 20, w: int = 30) -> torch.Tensor:
        return torch.rand(n, h, w, 3, generator=g)

    return {
        # everything, seeking one frame in: the pose video runs out (its last frame repeats)
        "full": dict(width=32, height=48, length=9, batch_size=1, continue_motion_max_frames=5, video_frame_offset=1,
                     reference_image=img(1), face_video=img(7), pose_video=img(5), background_video=img(8),
                     character_mask=torch.rand(8, 24, 36, generator=g)),
        # continuing a clip: its last five frames kept, the offset moved back by them; a single mask frame
        "continue": dict(width=32, height=48, length=13, batch_size=2, continue_motion_max_frames=5,
                         video_frame_offset=10, continue_motion=img(7, 40, 40), pose_video=img(20),
                         face_video=img(3), background_video=img(30, 48, 32),
                         character_mask=(torch.rand(1, 48, 32, generator=g) > 0.5).float()),
        # two reference frames, no videos
        "bare": dict(width=48, height=32, length=5, batch_size=1, continue_motion_max_frames=1, video_frame_offset=0,
                     reference_image=img(2, 32, 48)),
    }


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def recorded_shapes() -> dict[str, tuple[int, ...]]:
    """The state-dict shapes ComfyUI's network had when recording (its stored blur filters left out)."""
    return {k: tuple(v) for k, v in json.loads(str(reference()["animate_shapes"])).items()}


def recorded_kernels() -> list[str]:
    """The names of the blur filters ComfyUI's network stores (``...kernel``)."""
    return json.loads(str(reference()["animate_kernels"]))


def animate_file(seed: int = 0) -> Path:
    """The tiny Animate model in ComfyUI's file layout (fp16, with the blur filters the released files carry)."""
    from _random_weights import cached_file

    def make() -> dict[str, torch.Tensor]:
        sd = {k: v.half() for k, v in animate_weights(recorded_shapes(), seed).items()}
        sd.update({k: blur_kernel().half() for k in recorded_kernels()})
        return sd

    return cached_file(f"{VERSION}-wan_animate_fp16_{seed}.safetensors", make)
