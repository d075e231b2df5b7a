"""The Lotus-D model: one x0 prediction from the image latent itself, steered by a fixed task embedding."""

from __future__ import annotations

from typing import Any

import torch

from ...model.base import BaseModel, ModelType
from ...model.detection import Shapes
from ..sd.models import SD20
from .detect import LOTUS_UNET

#: Lotus-D's task vector (depth/normal prediction as opposed to reconstruction); the UNet sees sin and cos of it
TASK = (1.0, 0.0)


def task_embedding(device: Any = None) -> torch.Tensor:
    """The [1, 4] label input: sin of the task vector, then its cos."""
    task = torch.tensor(TASK, dtype=torch.float32, device=device)
    return torch.cat([torch.sin(task), torch.cos(task)]).unsqueeze(0)


class LotusModel(BaseModel):
    """Image-to-image prediction (``IMG_TO_IMG``): the sampler state goes in unscaled and the output is x0,
    so one step at the top sigma maps the image latent to the annotation latent."""

    def __init__(self, model_config: Any, model_type: ModelType = ModelType.IMG_TO_IMG,
                 weights: Any = None, device: Any = None) -> None:
        super().__init__(model_config, model_type, weights, device)

    def encode_adm(self, **kwargs: Any) -> torch.Tensor:
        return task_embedding(kwargs.get("device"))


class LotusD(SD20):
    unet_config = LOTUS_UNET
    # 8 heads per attention layer whatever its width, as ComfyUI builds the model from the released files
    unet_extra_config = {"num_heads": 8, "num_head_channels": -1}
    family = "lotus_d"
    model_class = LotusModel

    def model_type(self, shapes: Shapes, prefix: str = "") -> ModelType:
        return ModelType.IMG_TO_IMG
