"""STYLE_MODEL: turns a CLIP vision output into extra conditioning tokens (ComfyUI's ``comfy.sd.StyleModel``).

Two kinds are recognised by their keys: the T2I style adapter (``style_embedding``;
ViT-L hidden states -> 8 tokens of width 768) and Flux Redux (``redux_down``;
SigLIP features -> 4096-wide tokens). Weights live in the model manager, in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from ..components.t2i_adapter import StyleAdapter
from .auxiliary import AuxiliaryModel, base_name, file_weights
from .files import load_module, tensor_shapes
from .patcher import ModelPatcher


class ReduxImageEncoder(nn.Module):
    def __init__(self, redux_dim: int = 1152, txt_in_features: int = 4096) -> None:
        super().__init__()
        from .ops import CastLinear

        self.redux_up = CastLinear(redux_dim, txt_in_features * 3)
        self.redux_down = CastLinear(txt_in_features * 3, txt_in_features)

    def forward(self, sigclip_embeds: torch.Tensor) -> torch.Tensor:
        return self.redux_down(torch.nn.functional.silu(self.redux_up(sigclip_embeds)))


class StyleModel:
    def __init__(self, patcher: ModelPatcher) -> None:
        self.patcher = patcher

    @property
    def model(self) -> nn.Module:
        return self.patcher.model.loaded_module

    @torch.no_grad()
    def get_cond(self, input: object) -> torch.Tensor:
        with self.patcher.use() as holder:
            net = holder.loaded_module
            hidden = input.last_hidden_state
            device = next(net.parameters()).device
            return net(hidden.to(device=device, dtype=torch.float32)).cpu()


def load_style_model(path: str) -> StyleModel:
    shapes = tensor_shapes(path)
    if "style_embedding" in shapes:
        def make() -> nn.Module:
            return StyleAdapter(width=1024, context_dim=768, num_head=8, n_layes=3, num_token=8)
    elif "redux_down.weight" in shapes:
        def make() -> nn.Module:
            return ReduxImageEncoder()
    else:
        raise ValueError(f"invalid style model {base_name(path)}")

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        with torch.device("meta"):
            net = make()
        return load_module(net, sd, "style model")

    with torch.device("meta"):
        wanted = set(make().state_dict())
    missing = sorted(wanted - set(shapes))
    if missing:
        raise ValueError(f"{base_name(path)}: {len(missing)} style model weights missing, e.g. {missing[:3]}")
    weights = file_weights(path, "", "style_model", build, lambda: torch.float32, frozenset(wanted),
                           rename=lambda k: k if k in wanted else None)
    return StyleModel(ModelPatcher(AuxiliaryModel(weights)))
