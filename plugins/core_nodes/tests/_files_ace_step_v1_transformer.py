"""A small ACE-Step 1.0 transformer in the checkpoint's key layout, with seeded random weights.

``data/ace_step_v1/transformer_reference.npz`` holds ComfyUI 0.3.64's outputs
for these weights (``data/ace_step_v1/record_transformer.py`` records it) and
the state dict's shapes, so the weights are rebuilt here from the shapes alone.

The small network keeps every part of the released one: 2 linear-attention
blocks 256 wide (two 128-wide heads, as the real 2560 are twenty), a 384-wide
feed-forward, the full patch embedding (8 -> 2048 channels, group norm), the
512-wide speaker input, a 64-wide caption input, a 96-token lyric vocabulary
embedded 48 wide into a 2-layer, 64-wide Conformer with 4 heads, and two SSL
projectors. This module needs only torch and numpy, so ComfyUI's venv can
import it too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "ace_step_v1" / "transformer_reference.npz"
PREFIX = "model.diffusion_model."

#: ComfyUI's ``ACEStepTransformer2DModel(**SMALL)``
SMALL = {
    "in_channels": 8, "num_layers": 2, "inner_dim": 256, "attention_head_dim": 128, "num_attention_heads": 2,
    "mlp_ratio": 1.5, "out_channels": 8, "max_position": 4096, "rope_theta": 1000000.0,
    "speaker_embedding_dim": 512, "text_embedding_dim": 64, "ssl_encoder_depths": [1, 1],
    "ssl_names": ["mert", "m-hubert"], "ssl_latent_dims": [24, 16], "lyric_encoder_vocab_size": 96,
    "lyric_hidden_size": 48, "patch_size": [16, 1], "max_height": 16, "max_width": 64,
}
#: its ``lyric_encoder`` replaced by ``ConformerEncoder(input_size=48, static_chunk_size=0, **SMALL_LYRIC)``
#: and ``lyric_proj`` by a Linear(64, 256), since the constructor fixes both to the released widths
SMALL_LYRIC = {"output_size": 64, "attention_heads": 4, "linear_units": 128, "num_blocks": 2}


def _is_norm_gain(key: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 1 and key.endswith(".weight") and (
        "norm" in key or ".out.1." in key or "early_conv_layers.1." in key)


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """bfloat16 weights for ``shapes`` (keys without the prefix): unit-gain matrices, small biases and
    modulation tables, norm gains near 1, so activations stay O(1) through the network."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        x = torch.randn(shape, generator=g)
        if _is_norm_gain(key, shape):
            x = 1 + 0.1 * x
        elif key.endswith("scale_shift_table"):
            x = 0.2 * x
        elif key.endswith(("pos_bias_u", "pos_bias_v")):
            x = 0.1 * x
        elif key == "lyric_embs.weight":
            pass
        elif len(shape) == 1:
            x = 0.05 * x
        else:
            x = x / float(np.prod(shape[1:])) ** 0.5
        out[key] = x.to(torch.bfloat16)
    return out


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def transformer_shapes() -> dict[str, tuple[int, ...]]:
    """Key (without the prefix) -> shape of ComfyUI's small model, as recorded."""
    with np.load(REFERENCE) as data:
        return {k: tuple(v) for k, v in json.loads(str(data["shapes"])).items()}


def transformer_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The small transformer's weights under ``model.diffusion_model.`` (bfloat16, seeded)."""
    return {PREFIX + k: v for k, v in random_weights(transformer_shapes(), seed).items()}
