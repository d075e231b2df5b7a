"""``comfy_extras.chainner_models.model_loading``: a state dict to a spandrel model descriptor.

Uses the spandrel import of core_nodes' upscale package (which works without
torchvision), as ComfyUI's deprecated module forwards to spandrel.
"""

from __future__ import annotations

import logging
from typing import Any


def load_state_dict(state_dict: dict[str, Any]) -> Any:
    from comfy_kernel_core_nodes.upscale.spandrel_import import import_spandrel

    logging.getLogger(__name__).warning(
        "comfy_extras.chainner_models is deprecated and has been replaced by the spandrel library.")
    return import_spandrel().ModelLoader().load_from_state_dict(state_dict).eval()
