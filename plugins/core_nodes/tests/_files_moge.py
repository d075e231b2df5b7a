"""A tiny MoGe-2 in the real key layout, with seeded random weights, and the recorded reference outputs.

``data/moge/reference.npz`` was recorded from Microsoft's MoGe code with these
weights (``data/moge/record.py`` says how); it also lists the tensor shapes,
so the weights are rebuilt here without that code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "moge" / "reference.npz"

#: Microsoft's ``MoGeModel(**TINY)`` with its ViT replaced by a 4-layer, 128-wide one on a 8x8 position grid
TINY = {
    "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": [0, 1, 2, 3], "dim_out": 64},
    "neck": {"dim_in": [66, 2, 2, 2, 2], "dim_res_blocks": [64, 32, 16, 16, 8], "dim_out": None,
             "num_res_blocks": [0, 1, 1, 1, 0], "res_block_in_norm": "none", "res_block_hidden_norm": "none",
             "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"]},
    "points_head": {"dim_in": [64, 32, 16, 16, 8], "dim_res_blocks": [64, 32, 16, 16, 8],
                    "dim_out": [None, None, None, None, 3], "num_res_blocks": [0, 1, 1, 1, 0],
                    "res_block_in_norm": "none", "res_block_hidden_norm": "none",
                    "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"]},
    "normal_head": {"dim_in": [64, 32, 16, 16, 8], "dim_res_blocks": [64, 32, 16, 16, 8],
                    "dim_out": [None, None, None, None, 3], "num_res_blocks": [0, 1, 1, 1, 0],
                    "res_block_in_norm": "none", "res_block_hidden_norm": "none",
                    "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"]},
    # norms in one head, so both kinds of residual block are checked
    "mask_head": {"dim_in": [64, 32, 16, 16, 8], "dim_res_blocks": [64, 32, 16, 16, 8],
                  "dim_out": [None, None, None, None, 1], "num_res_blocks": [0, 2, 0, 0, 0],
                  "res_block_in_norm": "layer_norm", "res_block_hidden_norm": "group_norm",
                  "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"]},
    "scale_head": {"dims": [128, 64, 1]},
    "remap_output": "exp",
    "num_tokens_range": [1200, 3600],
}
TINY_VIT = {"img_size": 112, "patch_size": 14, "embed_dim": 128, "depth": 4, "num_heads": 2, "mlp_ratio": 4,
            "init_values": 1.0, "ffn_layer": "mlp", "block_chunks": 0, "num_register_tokens": 0,
            "interpolate_antialias": False, "interpolate_offset": 0.1}


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights scaled so activations stay near 1 through the network; every value exact in float16."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(shapes):
        shape = shapes[key]
        x = torch.randn(shape, generator=g)
        if key.endswith(("image_mean", "image_std")):
            continue
        if key.endswith(".gamma") or (len(shape) == 1 and key.endswith(".weight")):
            x = 1 + 0.1 * x
        elif key.endswith(".bias"):
            x = 0.05 * x
        elif key.endswith(("cls_token", "pos_embed", "mask_token")):
            x = 0.2 * x
        else:
            x = x * 0.7 / max(x[0].numel(), 1) ** 0.5
        sd[key] = x.half().float()
    return sd


def camera_points(h: int, w: int, focal: float = 1.4, shift: float = 2.0) -> torch.Tensor:
    """[1, H, W, 3]: a wavy surface seen by a camera of ``focal`` (relative to the half diagonal), z less ``shift``.

    Random weights predict points no camera fits, so the camera recovery is
    checked on these (plus a little of the network's output, see :func:`conditioned`).
    """
    aspect = w / h
    diag = (1 + aspect ** 2) ** 0.5
    fx, fy = focal / 2 * diag / aspect, focal / 2 * diag
    v, u = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    depth = 3 + 0.5 * torch.sin(6 * u) * torch.cos(4 * v) + u
    return torch.stack([(u - 0.5) / fx * depth, (v - 0.5) / fy * depth, depth - shift], dim=-1)[None]


def conditioned(points: torch.Tensor) -> torch.Tensor:
    """The network's points made into a map a camera fits: :func:`camera_points` plus 2 % of them."""
    return camera_points(points.shape[1], points.shape[2]).to(points) + 0.02 * points


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def shapes() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads(str(reference()["shapes"])).items()}


def write_file(path: Path) -> Path:
    """The tiny model as a float16 safetensors file, with the ImageNet statistics the real files carry."""
    from safetensors.torch import save_file

    sd = {k: v.half() for k, v in random_weights(shapes()).items()}
    sd["encoder.image_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    sd["encoder.image_std"] = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
