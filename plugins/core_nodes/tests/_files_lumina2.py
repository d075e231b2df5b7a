"""Random-weight files of Lumina-Image 2.0 in ComfyUI's key layouts (see _random_weights).

| file | what | size |
| --- | --- | --- |
| gemma_2_2b_bf16 | Gemma 2 2B at width 2304, 2 layers, feed-forward 256, with its ``spiece_model`` | ~65 MB |
| lumina_2_bf16 | NextDiT at width 2304 (24 heads of 96), 1 layer + 1 + 1 refiners, feed-forward 256 | ~0.15 GB |
| lumina_2_checkpoint | the two above in one checkpoint under ComfyUI's prefixes (no VAE) | ~0.22 GB |

Detection reads the widths it needs from the keys (Gemma's 2304, NextDiT's
caption width and heads), so depth and feed-forward widths are cut. The
SentencePiece model is trained here on a few sentences with Gemma's special
ids (pad 0, end 1, start 2, unknown 3) and stored as ComfyUI's Gemma files
store theirs, a byte tensor. Files are written once into the repository's
``.cache``; the version in each name changes when a recipe does.
"""

from __future__ import annotations

import functools
import io
from dataclasses import replace
from pathlib import Path

import torch
from _random_weights import cached_file, module_shapes, random_state_dict

from comfy_kernel_core_nodes.components.llm.decoder import GEMMA2_2B, DecoderLM, LLMConfig
from comfy_kernel_core_nodes.families.lumina2.nextdit import LUMINA2, NextDiT

VERSION = "v1"
CORPUS = ["a cat sits on a red chair in the garden", "a photograph of a mountain lake at sunrise",
          "You are an assistant designed to generate superior images with the superior degree of image-text "
          "alignment based on textual prompts or user prompts.", "<Prompt Start> a small boat, high quality"]


@functools.lru_cache(maxsize=1)
def spiece_model() -> bytes:
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 8), model_writer=out, vocab_size=120,
                                             model_type="unigram", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                             character_coverage=1.0, hard_vocab_limit=False,
                                             minloglevel=2, num_threads=1)
    return out.getvalue()


def small_config() -> LLMConfig:
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_proto=spiece_model()).get_piece_size()
    return replace(GEMMA2_2B, vocab_size=vocab, num_layers=2, intermediate_size=256)


def gemma_sd() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = module_shapes(DecoderLM(small_config()))
    sd = random_state_dict(shapes, 9, torch.bfloat16)
    sd["spiece_model"] = torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)
    return sd


def gemma_file() -> Path:
    return cached_file(f"{VERSION}-gemma_2_2b_bf16.safetensors", gemma_sd)


def lumina2_sd() -> dict[str, torch.Tensor]:
    config = replace(LUMINA2, n_layers=1, n_refiner_layers=1, ffn_hidden=256)
    with torch.device("meta"):
        shapes = module_shapes(NextDiT(config))
    return random_state_dict(shapes, 10, torch.bfloat16)


def lumina2_file() -> Path:
    return cached_file(f"{VERSION}-lumina_2_bf16.safetensors", lumina2_sd)


def lumina2_checkpoint() -> Path:
    """An all-in-one checkpoint: the transformer, Gemma (its tokenizer as ``text_encoders.spiece_model``)."""
    def make() -> dict[str, torch.Tensor]:
        sd = {"model.diffusion_model." + k: v for k, v in lumina2_sd().items()}
        for key, value in gemma_sd().items():
            name = "text_encoders." + (key if key == "spiece_model" else "gemma2_2b.transformer." + key)
            sd[name] = value
        return sd

    return cached_file(f"{VERSION}-lumina_2_checkpoint.safetensors", make)
