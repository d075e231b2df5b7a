"""ComfyUI's ``comfy_extras.nodes_stable3d``: ``camera_embeddings``, plus any core nodes declaring this module."""

from __future__ import annotations

import sys
from typing import Any

from comfy_kernel_compat.extras import core_node_defs, fill, node_class_getattr

fill(sys.modules[__name__], core_node_defs(__name__))
__getattr__ = node_class_getattr(__name__)


def camera_embeddings(elevation: float, azimuth: float) -> Any:
    """Stable Zero123's camera conditioning: [1, 1, 4] (polar offset, sin/cos azimuth, zero-elevation term)."""
    import torch

    elevation = torch.as_tensor([elevation])
    azimuth = torch.as_tensor([azimuth])
    return torch.stack([torch.deg2rad(-elevation), torch.sin(torch.deg2rad(azimuth)),
                        torch.cos(torch.deg2rad(azimuth)), torch.deg2rad(torch.full_like(elevation, 90.0))],
                       dim=-1).unsqueeze(1)
