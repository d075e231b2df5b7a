"""What LTX-2 puts between Gemma 3 and its transformer: the feature extractor and the text connectors.

Gemma's 49 hidden states (the embeddings, every layer's output, the final
normed state) are normalised and projected to one feature per token:

* LTX-2 (``text_embedding_projection.aggregate_embed``, one linear map
  3840 * 49 -> 3840 without bias): each state is centred on its mean over
  tokens and channels and scaled by 8 / its range (max - min) there; the
  states are interleaved channel by channel before the projection.
* LTX-2.3 (``video_aggregate_embed`` / ``audio_aggregate_embed``, with
  biases): each token's state is RMS-normalised over its channels and scaled
  by sqrt(output width / 3840) before each stream's projection; the two
  outputs are concatenated (video first).

The released LTX-2 checkpoints also carry two 3840-wide "embeddings
connectors" (``model.diffusion_model.video_embeddings_connector`` and
``audio_embeddings_connector``, connectors.py): a 1-d transformer of two
blocks over the tokens followed by learned register tokens. As in ComfyUI,
those two run here, on the text encoder's side, and the conditioning is their
outputs side by side ([video | audio], 2 x 3840 wide); the transformer splits
it. Files whose
connectors are wider or deeper (LTX-2.3) leave them to the diffusion model
and the conditioning is marked ``unprocessed_ltxav_embeds``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from .connectors import CONNECTORS, Connector, rms


class DualProjection(nn.Module):
    """LTX-2.3's two projections of the RMS-normed, layer-interleaved states (video, then audio)."""

    def __init__(self, ops: Any, cin: int, video: int, audio: int) -> None:
        super().__init__()
        self.video_aggregate_embed = ops.Linear(cin, video)
        self.audio_aggregate_embed = ops.Linear(cin, audio)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        width = states.shape[-1]
        x = rms(states.movedim(1, -1).transpose(-1, -2)).transpose(-1, -2).flatten(2)
        outs = [proj(x * math.sqrt(proj.out_features / width))
                for proj in (self.video_aggregate_embed, self.audio_aggregate_embed)]
        return torch.cat(outs, dim=-1)


class TextHead(nn.Module):
    """The feature extractor (``text_embedding_projection``) and, where the text encoder runs them, the connectors.

    ``forward(states [B, 49, L, 3840])`` -> (the conditioning [B, L', C], whether the connectors still have to run).
    Widths come from the file (:func:`head_layout`).
    """

    def __init__(self, ops: Any, layout: dict[str, Any]) -> None:
        super().__init__()
        self.layout = layout
        cin = layout["in_features"]
        if layout["projection"] == "dual_linear":
            self.text_embedding_projection = DualProjection(ops, cin, layout["video_width"], layout["audio_width"])
        else:
            self.text_embedding_projection = ops.Linear(cin, layout["width"], bias=False)
        if layout.get("connector_layers"):
            for name in CONNECTORS:
                setattr(self, name, Connector(ops, layout["width"], layout["connector_layers"],
                                              layout["connector_registers"]))

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, bool]:
        return run_head(self, self.layout, states)


def run_head(head: nn.Module, layout: dict[str, Any], states: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """:class:`TextHead`'s computation on any module holding its parts under their names."""
    if states.shape[1] * states.shape[-1] != layout["in_features"]:
        raise ValueError(f"the LTX-2 text projection reads {layout['in_features']} features per token; "
                         f"this Gemma gives {states.shape[1]} states of {states.shape[-1]}")
    if layout["projection"] == "dual_linear":
        return head.text_embedding_projection(states), True
    x = states.movedim(1, -1)  # [B, L, D, states]
    mean = x.mean(dim=(1, 2), keepdim=True)
    spread = x.amax(dim=(1, 2), keepdim=True) - x.amin(dim=(1, 2), keepdim=True)
    x = (8.0 * (x - mean) / (spread + 1e-6)).flatten(2)
    features = head.text_embedding_projection(x)
    if not layout.get("connector_layers"):
        return features, True
    return torch.cat([head.video_embeddings_connector(features),
                      head.audio_embeddings_connector(features)], dim=-1), False

CONNECTOR_PREFIX = "model.diffusion_model."


def head_layout(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any] | None:
    """Which feature extractor an LTX-2 checkpoint has (ComfyUI's ``single_linear`` / ``dual_linear``) and
    whether its connectors belong on the text encoder's side (at most two blocks as wide as the projection, as
    ComfyUI decides), or None without one."""
    if "text_embedding_projection.audio_aggregate_embed.bias" in shapes:
        video = shapes["text_embedding_projection.video_aggregate_embed.weight"]
        layout: dict[str, Any] = {
            "projection": "dual_linear", "in_features": int(video[1]), "video_width": int(video[0]),
            "audio_width": int(shapes["text_embedding_projection.audio_aggregate_embed.weight"][0])}
    else:
        weight = shapes.get("text_embedding_projection.aggregate_embed.weight",
                            shapes.get("text_embedding_projection.weight"))
        if weight is None:
            return None
        layout = {"projection": "single_linear", "in_features": int(weight[1]), "width": int(weight[0])}
    first = CONNECTOR_PREFIX + "audio_embeddings_connector.transformer_1d_blocks.{}.attn1.to_q.bias"
    bias = shapes.get(first.format(0))
    if layout["projection"] == "single_linear" and bias is not None and bias[0] == layout["width"] \
            and first.format(2) not in shapes:
        block = re.escape(CONNECTOR_PREFIX) + r"video_embeddings_connector\.transformer_1d_blocks\.(\d+)\."
        layout["connector_layers"] = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(block, k)))
        layout["connector_registers"] = int(
            shapes[CONNECTOR_PREFIX + "video_embeddings_connector.learnable_registers"][0])
    return layout


def head_key(file_key: str, layout: dict[str, Any]) -> str | None:
    """The head's name of a checkpoint key, or None for keys it does not read."""
    if file_key.startswith("text_embedding_projection."):
        if file_key == "text_embedding_projection.aggregate_embed.weight":
            return "text_embedding_projection.weight"
        return file_key
    if layout.get("connector_layers") and file_key.startswith(CONNECTOR_PREFIX):
        name = file_key[len(CONNECTOR_PREFIX):]
        if name.split(".", 1)[0] in CONNECTORS:
            return name
    return None
