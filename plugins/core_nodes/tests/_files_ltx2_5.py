"""Random-weight files of LTX-2.5 in the released split layout (see _random_weights).

| file | what |
| --- | --- |
| ltx25_transformer | LTX-2.3's small transformer (_files_ltx2_3) as LTX-2.5 has it: no text-modulation timestep embedding, no video feed-forward biases, the keyframe marker; its connectors; no prefix, as in ``diffusion_models`` files |
| ltx25_video_vae | LTX-2.3's small video VAE alone, with its ``config`` metadata |
| ltx25_enhancer | a dense Gemma 4 chat model (E2B's kind) at width 128, 5 layers, with per-layer inputs of 16, the last two layers sharing keys and values, under Hugging Face's ``model.language_model.`` names, with the same tokenizer and its config |
| ltx25_text_encoder | Gemma 4 at width 256, 7 layers (the fourth and the last global, with 128-wide heads and values from the keys; the last two reuse the keys and values of the last earlier layer of their kind), vocabulary 512, with LTX-2.5's projection (8 states of 256 onto 128 and 64), the tokenizer as ``tokenizer_json`` and the config as ``gemma_config`` metadata, plus two image-embedder keys the released file carries |

The tokenizer is byte-level BPE without merges (a token per byte), with
Gemma's special ids (pad 0, end 1, start 2) and the turn markers at 105 and
106, so any text tokenizes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import torch
from _files_ltx2 import _shapes, video_vae_sd
from _files_ltx2_3 import HEAD_23, TRANSFORMER_23, TRANSFORMER_METADATA, VAE_METADATA, VIDEO_VAE_LAYOUT_23
from _random_weights import cached_file, random_state_dict

from comfy_kernel_core_nodes.components.llm.gemma4 import FULL, SLIDING, Gemma4Config, Gemma4LM
from comfy_kernel_core_nodes.families.ltx2.text_head import TextHead
from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Transformer
from comfy_kernel_core_nodes.model import ops

VERSION = "v1"
TRANSFORMER_25 = replace(TRANSFORMER_23, prompt_adaln=False, ff_bias=False, keyframe_embedding=True)
GEMMA4 = Gemma4Config(vocab_size=512, hidden_size=256, intermediate_size=128, num_heads=2,
                      layer_types=(SLIDING,) * 3 + (FULL,) + (SLIDING,) * 2 + (FULL,), head_dim=64, global_head_dim=128, num_kv_heads=1,
                      num_global_kv_heads=1, sliding_window=16, k_eq_v=True, kv_shared=2)
#: the Hugging Face config the released file carries (the part read here)
GEMMA4_HF = {"model_type": "gemma4_unified", "text_config": {
    "vocab_size": 512, "hidden_size": 256, "intermediate_size": 128, "num_hidden_layers": 7,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "global_head_dim": 128,
    "num_global_key_value_heads": 1, "sliding_window": 16, "attention_k_eq_v": True, "num_kv_shared_layers": 2,
    "layer_types": list(GEMMA4.layer_types), "rms_norm_eps": 1e-6,
    "rope_parameters": {SLIDING: {"rope_type": "default", "rope_theta": 10000.0},
                        FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": 1000000.0}}}}


@functools.lru_cache(maxsize=1)
def tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<|turn>": 105, "<turn|>": 106}
    free = (i for i in range(4, 512) if i not in vocab.values())
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = next(free)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<pad>", "<eos>", "<bos>", "<|turn>", "<turn|>"])
    return tok.to_str()


def _tokenizer_tensor() -> torch.Tensor:
    return torch.frombuffer(bytearray(tokenizer_json().encode()), dtype=torch.uint8)


def transformer_file(seed: int = 61) -> Path:
    def make() -> dict[str, torch.Tensor]:
        sd = random_state_dict(_shapes(lambda: LTX2Transformer(TRANSFORMER_25)), seed, torch.bfloat16)
        for key in [k for k in sd if k.endswith("learnable_registers")]:
            sd[key] = (torch.rand(sd[key].shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1).bfloat16()
        return sd

    return cached_file(f"{VERSION}-ltx25_transformer_small_{seed}.safetensors", make,
                       metadata={"config": json.dumps({"transformer": TRANSFORMER_METADATA})})


def video_vae_file() -> Path:
    return cached_file(f"{VERSION}-ltx25_video_vae_small.safetensors",
                       lambda: video_vae_sd("", shape=VIDEO_VAE_LAYOUT_23),
                       metadata={"config": json.dumps({"vae": VAE_METADATA})})


def text_encoder_sd(seed: int = 62) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Gemma4LM(GEMMA4).state_dict().items()}
    sd = random_state_dict(shapes, seed, torch.bfloat16)
    for key in [k for k in sd if k.endswith("layer_scalar")]:
        sd[key] = torch.full((1,), 0.9, dtype=torch.bfloat16)
    sd.update(random_state_dict(_shapes(lambda: TextHead(ops.plain, HEAD_23)), seed + 1, torch.bfloat16))
    generator = torch.Generator().manual_seed(seed + 2)
    sd["vision_model.patch_embedder.input_proj.weight"] = torch.randn(8, 48, generator=generator).bfloat16()
    sd["multi_modal_projector.embedding_projection.weight"] = torch.randn(256, 8, generator=generator).bfloat16()
    sd["tokenizer_json"] = _tokenizer_tensor()
    return sd


def text_encoder_file(seed: int = 62) -> Path:
    """LTX-2.5's text encoder: the small Gemma 4 with the projection, tokenizer and config in one file."""
    return cached_file(f"{VERSION}-ltx25_text_encoder_small_{seed}.safetensors", lambda: text_encoder_sd(seed),
                       metadata={"gemma_config": json.dumps(GEMMA4_HF)})


ENHANCER = Gemma4Config(vocab_size=512, hidden_size=128, intermediate_size=128, num_heads=2,
                        layer_types=(SLIDING, SLIDING, FULL, SLIDING, FULL), head_dim=32, global_head_dim=64,
                        num_kv_heads=1, sliding_window=8, kv_shared=2, double_wide_mlp=True, per_layer_width=16,
                        per_layer_vocab_size=512, final_softcap=30.0)
ENHANCER_HF = {"model_type": "gemma4", "text_config": {
    "vocab_size": 512, "hidden_size": 128, "intermediate_size": 128, "num_hidden_layers": 5,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "global_head_dim": 64,
    "sliding_window": 8, "num_kv_shared_layers": 2, "use_double_wide_mlp": True,
    "hidden_size_per_layer_input": 16, "vocab_size_per_layer_input": 512, "final_logit_softcapping": 30.0,
    "layer_types": list(ENHANCER.layer_types), "rms_norm_eps": 1e-6,
    "rope_parameters": GEMMA4_HF["text_config"]["rope_parameters"]}}


def enhancer_file(seed: int = 63) -> Path:
    """The Gemma 4 prompt enhancer (a chat model alone, Hugging Face's names)."""
    def make() -> dict[str, torch.Tensor]:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in Gemma4LM(ENHANCER).state_dict().items()}
        sd = random_state_dict(shapes, seed, torch.bfloat16)
        out = {"model.language_model." + k[len("model."):]: v for k, v in sd.items()}
        for key in [k for k in out if k.endswith("layer_scalar")]:
            out[key] = torch.full((1,), 0.9, dtype=torch.bfloat16)
        out["tokenizer_json"] = _tokenizer_tensor()
        return out

    return cached_file(f"{VERSION}-ltx25_enhancer_small_{seed}.safetensors", make,
                       metadata={"gemma_config": json.dumps(ENHANCER_HF)})
