"""Stable Diffusion 2.1 unCLIP (L and H): SD2.1 conditioned on a CLIP image embedding through its ADM input.

Detected like the SD2.x UNet (context 1024, linear projections) with an ADM
input of 1536 (ViT-L embeddings) or 2048 (ViT-H); the checkpoints carry their
CLIP vision tower under ``embedder.model.visual.`` (unCLIPCheckpointLoader).
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import models

    detection.MODEL_CONFIGS.extend([models.SD21UnclipL, models.SD21UnclipH])
