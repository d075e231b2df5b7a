"""A random-weight ACE-Step 1.0 checkpoint in ComfyUI's all-in-one layout (``ace_step_v1_3.5b``), small.

The transformer (``model.diffusion_model.``), the music DC-AE with its vocoder
(``vae.``) and umt5-base with its SentencePiece model (``text_encoders.``),
each at the small sizes of its own helper (_files_ace_step_v1_transformer,
_vae, _text; the umt5 as wide as the transformer's caption input, the lyric
embedding as long as the real lyrics vocabulary), in one file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _files_ace_step_v1_text import text_state_dict
from _files_ace_step_v1_transformer import SMALL, transformer_state_dict
from _files_ace_step_v1_vae import vae_state_dict
from _random_weights import cached_file

VERSION = "v1"


#: the released lyric vocabulary (the lyrics tokenizer's ids reach 6692), in place of the recorded model's 96
LYRIC_VOCAB = 6693


def checkpoint_sd(seed: int) -> dict[str, torch.Tensor]:
    transformer = transformer_state_dict(seed)
    key = "model.diffusion_model.lyric_embs.weight"
    width = transformer[key].shape[1]
    transformer[key] = torch.randn(LYRIC_VOCAB, width, generator=torch.Generator().manual_seed(seed)).bfloat16()
    return {**transformer, **vae_state_dict(seed + 1), **text_state_dict(seed + 2, SMALL["text_embedding_dim"])}


def checkpoint_file(seed: int = 71) -> Path:
    return cached_file(f"{VERSION}-ace_step_v1_small_{seed}.safetensors", lambda: checkpoint_sd(seed))
