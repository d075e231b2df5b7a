"""The shared LLM text-encoder parts (components/llm) against Hugging Face transformers on the same weights.

transformers is a test-only oracle here (the ``test`` extra); the plugin never
imports it. Small configurations keep the runs fast; every code path the real
encoders take (grouped-query attention, q/k/v biases, q/k norms, multimodal
rotary positions, windowed vision attention, padding masks) is exercised.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

from comfy_kernel_core_nodes.components.llm import decoder as D
from comfy_kernel_core_nodes.components.llm import qwen_vision as V
from comfy_kernel_core_nodes.components.llm.tokenizer import DATA, SPECIAL_TOKENS, QwenTokenizer

transformers = pytest.importorskip("transformers")

PROMPTS = [
    "<|im_start|>system\nDescribe the image:<|im_end|>\n<|im_start|>user\nA cat's hat, 12345 dollars!!  \n\n"
    " héllo 世界 café <|vision_start|><|image_pad|><|vision_end|> tabs\there<|im_end|>\n<|im_start|>assistant\n",
    "低分辨率，低画质，肢体畸形，手指畸形 emoji 🎨 x",
    "I'll   don't THEY'RE  ",
    "Ａｎｇｓｔｒöm e\u0301 ﬁ",
    "",
]


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    err = (a.float() - b.float()).abs().max().item()
    scale = b.float().abs().max().item()
    assert err <= rtol * scale + 1e-6, f"max error {err} against max value {scale}"


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen_tokenizer")
    for name in ("vocab.json", "merges.txt"):
        with gzip.open(DATA / f"{name}.gz", "rb") as src, open(folder / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    config = {"tokenizer_class": "Qwen2Tokenizer", "errors": "replace", "add_prefix_space": False,
              "pad_token": "<|endoftext|>", "unk_token": None, "bos_token": None,
              "added_tokens_decoder": {str(i): {"content": t, "special": True, "normalized": False, "lstrip": False,
                                                "rstrip": False, "single_word": False}
                                       for t, i in SPECIAL_TOKENS.items()}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return transformers.Qwen2Tokenizer.from_pretrained(str(folder))


def test_tokenizer_matches_transformers(hf_tokenizer):
    ours = QwenTokenizer()
    for text in PROMPTS:
        assert ours.encode(text) == hf_tokenizer(text)["input_ids"], text
    ids = ours.encode(PROMPTS[0])
    assert ours.decode(ids) == PROMPTS[0]
    assert SPECIAL_TOKENS["<|image_pad|>"] in ids


def test_tokenizer_data_ships_with_the_package():
    assert {p.name for p in Path(DATA).iterdir()} >= {"vocab.json.gz", "merges.txt.gz", "LICENSE"}
    assert "Apache License" in (Path(DATA) / "LICENSE").read_text()


def _decoder(config: D.LLMConfig, seed: int) -> D.DecoderLM:
    torch.manual_seed(seed)
    model = D.DecoderLM(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.02 if "embed" in name else p.shape[-1] ** -0.5))
    return model


def _hf_model_state(model: D.DecoderLM) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in model.state_dict().items()}


SMALL_QWEN2 = D.LLMConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4,
                          num_kv_heads=2, head_dim=16, qkv_bias=True, rope_theta=1e6)
SMALL_QWEN3 = D.LLMConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4,
                          num_kv_heads=2, head_dim=32, qk_norm=True, rope_theta=1e6)


@pytest.mark.parametrize("variant", ["qwen2", "qwen3"])
def test_decoder_matches_transformers(variant):
    config = SMALL_QWEN2 if variant == "qwen2" else SMALL_QWEN3
    ours = _decoder(config, 0)
    common = dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                  intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                  num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                  rms_norm_eps=config.rms_norm_eps, rope_theta=config.rope_theta, attn_implementation="eager",
                  max_position_embeddings=512)
    if variant == "qwen2":
        hf = transformers.Qwen2Model(transformers.Qwen2Config(**common))
    else:
        hf = transformers.Qwen3Model(transformers.Qwen3Config(head_dim=config.head_dim, **common))
    hf.load_state_dict(_hf_model_state(ours))
    hf.eval()
    ids = torch.randint(0, config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding in the second prompt
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        final, hidden = ours(ours.embed(ids), attention_mask=mask, hidden_layer=-2)
    valid = mask.bool()
    close(final[valid], ref.last_hidden_state[valid])
    close(hidden[valid], ref.hidden_states[-2][valid])


def test_multimodal_rotary_positions_match_transformers():
    config = D.LLMConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16, qkv_bias=True, rope_sections=(2, 3, 3))
    ours = _decoder(config, 2)
    hf_config = transformers.Qwen2_5_VLTextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=config.rope_theta, attn_implementation="eager",
        rope_parameters={
            "rope_type": "default", "rope_theta": config.rope_theta, "mrope_section": [2, 3, 3]})
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

    hf = m.Qwen2_5_VLTextModel(hf_config).eval()
    hf.load_state_dict(_hf_model_state(ours))
    embeds = torch.randn(1, 9, 64, generator=torch.Generator().manual_seed(3))
    positions = torch.stack([torch.tensor([0, 1, 2, 2, 2, 2, 2, 4, 5]), torch.tensor([0, 1, 2, 2, 3, 3, 2, 4, 5]),
                             torch.tensor([0, 1, 2, 3, 2, 3, 2, 4, 5])])[:, None, :]
    with torch.no_grad():
        ref = hf(inputs_embeds=embeds, position_ids=positions).last_hidden_state
        final, _ = ours(embeds, positions=positions)
    close(final, ref)


def test_vision_tower_matches_transformers():
    config = V.VisionConfig(hidden_size=64, output_size=48, intermediate_size=80, num_heads=4, num_layers=3,
                            window_size=56, full_attention_blocks=(1,))
    torch.manual_seed(4)
    ours = V.VisionTransformer(config).float().eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name or "ln_q" in name
                    else torch.randn_like(p) * p[0].numel() ** -0.5)
    from transformers.models.qwen2_5_vl import configuration_qwen2_5_vl as cfg
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

    hf_config = cfg.Qwen2_5_VLVisionConfig(depth=3, hidden_size=64, intermediate_size=80, num_heads=4,
                                           out_hidden_size=48, patch_size=14, spatial_merge_size=2,
                                           temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                                           hidden_act="silu")
    hf_config._attn_implementation = "eager"
    hf = m.Qwen2_5_VisionTransformerPretrainedModel(hf_config).eval()
    hf.load_state_dict(ours.state_dict())
    image = torch.rand(1, 150, 100, 3, generator=torch.Generator().manual_seed(5))
    patches, grid = V.image_patches(image, config)
    assert grid.tolist() == [[1, 10, 8]]  # 140 x 112 after rounding to multiples of 28
    with torch.no_grad():
        ref = hf(patches, grid_thw=grid).pooler_output
        out = ours(patches, grid)
    assert out.shape == (20, 48)
    close(out, ref)
