"""Lotus-D (depth and normal estimation): an SD 2 UNet fine-tuned to predict the annotation's latent in one step.

Detected like the SD2.x UNet, with a 4-wide ADM input (the sin/cos task
embedding); the released files are diffusers-layout UNets
(``class_embedding.linear_1``), read under the LDM names by the SD family's
diffusers key layout. ``LotusConditioning`` gives the fixed text conditioning
the model was trained with.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import models

    detection.MODEL_CONFIGS.append(models.LotusD)
