"""USO's style projector for Flux (a ``model_patches`` file, ``feature_embedder.*``).

USO reads a SigLIP image encoder at three depths (the outputs of its 20th-
and 11th-last layers and the penultimate one); each is pooled from the
encoder's tokens to a few style tokens by a linear map over the token axis
(then SiLU), layer-normed and projected to the transformer's width. The
style tokens are put in front of the text tokens after Flux's input layers,
with position ids of zero. Sizes are read from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

MARKER = "feature_embedder.mid_layer_norm.bias"
PREFIX = "feature_embedder."
#: The three feature sets in the order the projector's output lists them, and the encoder depth each reads.
LEVELS = ("high", "mid", "low")


@dataclass(frozen=True)
class ProjectorConfig:
    siglip_tokens: int = 729
    style_tokens: int = 64
    siglip_dim: int = 1152
    hidden_size: int = 3072


def config_from_keys(shapes: dict[str, tuple[int, ...]]) -> ProjectorConfig:
    style, tokens = shapes[PREFIX + "high_embedding_linear.0.weight"]
    hidden, dim = shapes[PREFIX + "high_projection.weight"]
    return ProjectorConfig(tokens, style, dim, hidden)


class _Level(nn.Module):
    def __init__(self, c: ProjectorConfig, ops: SimpleNamespace) -> None:
        super().__init__()
        self.pool = ops.Linear(c.siglip_tokens, c.style_tokens)
        self.norm = ops.LayerNorm(c.siglip_dim)
        self.projection = ops.Linear(c.siglip_dim, c.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        pooled = F.silu(self.pool(hidden.transpose(1, 2))).transpose(1, 2)
        return self.projection(self.norm(pooled))


class StyleProjector(nn.Module):
    """``forward(features)``: features [3, B, tokens, dim] (depths -20, -11, -2) -> [B, 3 * style, hidden]."""

    def __init__(self, config: ProjectorConfig, ops: SimpleNamespace) -> None:
        super().__init__()
        self.config = config
        self.levels = nn.ModuleDict({name: _Level(config, ops) for name in LEVELS})

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        low, mid, high = features[0], features[1], features[2]
        return torch.cat([self.levels["high"](high), self.levels["mid"](mid), self.levels["low"](low)], dim=1)


def rename(key: str) -> str | None:
    """The file's name of a weight -> the projector's (``feature_embedder.high_layer_norm.weight`` ->
    ``levels.high.norm.weight``); other keys are dropped."""
    if not key.startswith(PREFIX):
        return None
    name = key[len(PREFIX):]
    for level in LEVELS:
        for theirs, ours in (("_embedding_linear.0.", ".pool."), ("_layer_norm.", ".norm."),
                             ("_projection.", ".projection.")):
            start = level + theirs
            if name.startswith(start):
                return f"levels.{level}{ours}{name[len(start):]}"
    return None
