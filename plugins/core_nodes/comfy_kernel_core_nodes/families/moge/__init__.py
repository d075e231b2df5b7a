"""MoGe-2 (monocular geometry estimation): image -> camera-space points, depth, normals, mask and intrinsics.

Not a diffusion model: ``LoadMoGeModel`` reads a ``geometry_estimation`` file
itself (``estimator.py``), ``model.py`` is the network, ``geometry.py`` turns
its affine point map into a camera, and ``nodes.py`` renders the results as
images (depth, coloured depth, normal maps, the mask).
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    """No checkpoint or diffusion-model detector: MoGe files are only read by ``LoadMoGeModel``."""
