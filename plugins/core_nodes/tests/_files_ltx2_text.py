"""Random-weight files of LTX-2's text side in ComfyUI's key layouts (see _random_weights).

| file | what |
| --- | --- |
| gemma_3_small | Gemma 3 at width 256, 7 layers (the sixth global), 2 heads of 64, vocabulary 512, with its ``spiece_model`` and two vision-tower keys the released multimodal files carry |
| ltx2_text_head | an LTX-2 checkpoint's text side: ``text_embedding_projection.aggregate_embed`` (8 states x 256 -> 256) and the two connectors under ``model.diffusion_model.`` (2 blocks of 2 heads of 128, 128 registers), beside one transformer key |
| ltx23_text_head | LTX-2.3's: the video (192) and audio (96) projections with biases, and deeper connectors left to the diffusion model |

Detection reads every width from the keys (Gemma's widths, heads from the
q-norm width, the projection's input and output, the connectors' depth and
registers), so all are cut. The SentencePiece model is trained here with
Gemma's special ids (pad 0, end 1, start 2, unknown 3), byte fallback, no
normalisation (newlines kept) and the chat-turn markers as whole pieces; it is stored as ComfyUI's Gemma files store it.
"""

from __future__ import annotations

import functools
import io
from dataclasses import replace
from pathlib import Path

import torch
from _random_weights import cached_file, module_shapes, random_state_dict

from comfy_kernel_core_nodes.components.llm.decoder import GEMMA3_12B, DecoderLM
from comfy_kernel_core_nodes.families.ltx2.text_head import TextHead

VERSION = "v3"
CORPUS = ["a cat sits on a red chair in the garden", "a woman walks along a beach at sunset, waves rolling in",
          "Style: cinematic. A man speaks in a calm voice while rain falls on the window.",
          "You are a helpful assistant. User Raw Input Prompt: a dog runs through a field."]
GEMMA = replace(GEMMA3_12B, vocab_size=512, hidden_size=256, intermediate_size=128, num_layers=7, num_heads=2,
                num_kv_heads=1, head_dim=64, query_pre_attn_scalar=64.0)
STATES = GEMMA.num_layers + 1
HEAD = {"projection": "single_linear", "in_features": STATES * GEMMA.hidden_size, "width": 256,
        "connector_layers": 2, "connector_registers": 128}
HEAD_23 = {"projection": "dual_linear", "in_features": STATES * GEMMA.hidden_size, "video_width": 192,
           "audio_width": 96}


@functools.lru_cache(maxsize=1)
def spiece_model() -> bytes:
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 8), model_writer=out, vocab_size=420, model_type="unigram", byte_fallback=True, pad_id=0,
        eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        character_coverage=1.0, hard_vocab_limit=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, minloglevel=2, num_threads=1)
    return out.getvalue()


def gemma_sd() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = module_shapes(DecoderLM(GEMMA))
    sd = random_state_dict(shapes, 21, torch.bfloat16)
    sd["spiece_model"] = torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(22)
    sd["vision_model.embeddings.patch_embedding.weight"] = torch.randn(8, 3, 14, 14, generator=generator).bfloat16()
    sd["multi_modal_projector.mm_input_projection_weight"] = torch.randn(8, 256, generator=generator).bfloat16()
    return sd


def gemma_file() -> Path:
    return cached_file(f"{VERSION}-gemma_3_small.safetensors", gemma_sd)


def head_sd(layout: dict, seed: int) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.model import ops

    with torch.device("meta"):
        shapes = module_shapes(TextHead(ops.plain, layout))
    sd = random_state_dict(shapes, seed, torch.bfloat16)
    out = {}
    for key, tensor in sd.items():
        if key == "text_embedding_projection.weight":
            key = "text_embedding_projection.aggregate_embed.weight"
        elif not key.startswith("text_embedding_projection."):
            key = "model.diffusion_model." + key
        if key.endswith("learnable_registers"):
            tensor = (torch.rand(tensor.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1).bfloat16()
        out[key] = tensor
    out["model.diffusion_model.patchify_proj.weight"] = torch.zeros(8, 128, dtype=torch.bfloat16)
    return out


def ltx2_head_file() -> Path:
    return cached_file(f"{VERSION}-ltx2_text_head.safetensors", lambda: head_sd(HEAD, 23))


def ltx23_head_file() -> Path:
    def make() -> dict[str, torch.Tensor]:
        sd = head_sd(HEAD_23, 24)
        for i in range(3):  # LTX-2.3's connectors: deeper, run by the diffusion model
            for name in ("video", "audio"):
                sd[f"model.diffusion_model.{name}_embeddings_connector.transformer_1d_blocks.{i}.attn1.to_q.bias"] = \
                    torch.zeros(192 if name == "video" else 96, dtype=torch.bfloat16)
        return sd

    return cached_file(f"{VERSION}-ltx23_text_head.safetensors", make)
