"""GLIGEN models (GLIGENLoader): a ModelPatcher whose ``model`` places boxes, as ComfyUI's guider expects.

The guider calls ``gligen_patcher.model.set_position(latent_shape, boxes, device)``
(or ``set_empty``) for the entries carrying ``gligen``; here ``model`` is a
holder of the weights in the model manager that runs the loaded network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..components.gligen import Gligen, layout
from .auxiliary import AuxiliaryModel, base_name, file_weights
from .files import load_module, tensor_shapes
from .patcher import ModelPatcher


class GligenModel(AuxiliaryModel):
    """The GLIGEN network's weights; ``set_position`` / ``set_empty`` run the loaded network."""

    def set_position(self, latent_image_shape: Any, position_params: list, device: Any) -> Callable:
        return self.loaded_module.set_position(latent_image_shape, position_params, device)

    def set_empty(self, latent_image_shape: Any, device: Any) -> Callable:
        return self.loaded_module.set_empty(latent_image_shape, device)


def load_gligen(path: str) -> ModelPatcher:
    from .devices import storage_dtype

    shapes = tensor_shapes(path)
    found = layout(shapes)
    if found is None or not found[0]:
        raise ValueError(f"{base_name(path)}: not a GLIGEN model (no position_net / fuser weights)")
    fusers, in_dim, out_dim, names = found

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        with torch.device("meta"):
            net = Gligen(fusers, in_dim, out_dim)
        return load_module(net, sd, "GLIGEN")

    with torch.device("meta"):
        wanted = set(Gligen(fusers, in_dim, out_dim).state_dict())
    missing = sorted(wanted - set(names.values()))
    if missing:
        raise ValueError(f"{base_name(path)}: {len(missing)} GLIGEN weights missing, e.g. {missing[:3]}")
    weights = file_weights(path, "", "gligen", build, lambda: storage_dtype("unet"), frozenset(wanted),
                           rename=names.get)
    return ModelPatcher(GligenModel(weights))
