"""What tells a Lotus-D UNet apart from an SD 2 one: the label embedding that takes the 4-wide task vector.

The network is SD 2's (320 channels, linear transformer projections, 1024-wide
context); SD 2 has no label embedding at all and the unCLIP variants take 1536
or 2048 values, so the ADM width alone decides.
"""

from __future__ import annotations

from typing import Any

#: the ``unet_config`` entries of a Lotus-D UNet (as ComfyUI's ``LotusD`` lists them)
LOTUS_UNET: dict[str, Any] = {"model_channels": 320, "use_linear_in_transformer": True,
                              "use_temporal_attention": False, "adm_in_channels": 4, "in_channels": 4}


def is_lotus(unet_config: dict[str, Any]) -> bool:
    """Whether a detected UNet layout is Lotus-D's."""
    return all(unet_config.get(key) == value for key, value in LOTUS_UNET.items())
