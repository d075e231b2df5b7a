"""Inputs of the Phantom checks, shared by ``test_family_wan_phantom.py`` and ``data/wan_phantom/record.py``.

A 256-wide, two-block Wan 2.1 text-to-video transformer (``WAN``, ComfyUI's
``WanModel`` arguments; ours is ``transformer_config("t2v")`` of ``_files_wan``)
and its inputs per case: subject latents after the video's frames, a size that
needs padding to the patches, and no subjects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "wan_phantom" / "reference.npz"
WAN = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=256, ffn_dim=512, freq_dim=256,
           text_dim=128, out_dim=16, num_heads=2, num_layers=2, eps=1e-6)
#: name -> (video latent shape, subject latent shape or None)
CASES = {"subjects": ((1, 16, 3, 6, 8), (1, 16, 2, 6, 8)), "padded": ((1, 16, 2, 5, 7), (1, 16, 1, 5, 7)),
         "plain": ((1, 16, 2, 6, 8), None)}


def case_inputs(name: str) -> dict[str, torch.Tensor]:
    video, subjects = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    inputs = {"x": torch.randn(video, generator=g), "timestep": torch.tensor([350.0]),
              "context": torch.randn(1, 6, 128, generator=g)}
    if subjects is not None:
        inputs["time_dim_concat"] = torch.randn(subjects, generator=g)
    return inputs


def subject_images() -> torch.Tensor:
    """[3, 20, 30, 3]: three subjects, fitted by the node to 48x32."""
    return torch.rand(3, 20, 30, 3, generator=torch.Generator().manual_seed(21))


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}
