"""T5: tokens equal ComfyUI's, the encoder equals transformers' T5EncoderModel on the same random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _random_weights import module_shapes, random_state_dict

from comfy_kernel_core_nodes.components import t5
from comfy_kernel_core_nodes.model import ops

DATA = Path(__file__).parent / "data" / "flux"
TINY = t5.T5Config(width=256, ff_width=512, heads=4, layers=3)


def _pairs(chunks):
    return [[list(p) for p in chunk] for chunk in chunks]


@pytest.mark.parametrize("case", json.loads((DATA / "flux_tokens.json").read_text()), ids=lambda c: c["text"][:20])
def test_tokens_match_comfyui(case):
    assert _pairs(t5.tokenize_t5(case["text"], min_length=256)) == case["t5xxl"]


def test_config_is_read_from_the_keys():
    with torch.device("meta"):
        shapes = module_shapes(t5.T5Encoder(TINY), "text_encoders.t5xxl.transformer.")
    prefix = t5.t5_prefix(shapes)
    assert prefix == "text_encoders.t5xxl.transformer."
    assert t5.t5_config(shapes, prefix) == TINY


@pytest.fixture(scope="module")
def tiny_t5():
    with torch.device("meta"):
        model = t5.T5Encoder(TINY, ops.plain)
    sd = random_state_dict(module_shapes(model), seed=3, dtype=torch.float32)
    model.load_state_dict(sd, assign=True)
    return model.eval(), sd


def test_encoder_matches_transformers(tiny_t5):
    transformers = pytest.importorskip("transformers")
    model, sd = tiny_t5
    config = transformers.T5Config(vocab_size=TINY.vocab_size, d_model=TINY.width, d_kv=64, d_ff=TINY.ff_width,
                                   num_layers=TINY.layers, num_heads=TINY.heads, feed_forward_proj="gated-gelu",
                                   relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                   dropout_rate=0.0, layer_norm_epsilon=1e-6)
    oracle = transformers.T5EncoderModel(config).eval()
    missing, unexpected = oracle.load_state_dict({**sd, "encoder.embed_tokens.weight": sd["shared.weight"]},
                                                 strict=False)
    assert not missing and not unexpected
    ids = torch.tensor([[3, 9, 1202, 13, 3, 9, 1712, 1] + [0] * 20])
    mask = (torch.arange(ids.shape[1]) < 8).long()[None]
    with torch.no_grad():
        for attention_mask in (None, mask):
            ours, _ = model(model.embed([[(int(t), 1.0) for t in ids[0]]]), attention_mask)
            ref = oracle(input_ids=ids, attention_mask=attention_mask).last_hidden_state
            assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-4


def test_weighted_tokens_interpolate_against_the_empty_prompt(tiny_t5):
    model, _ = tiny_t5
    plain = t5.tokenize_t5("a photo of a cat", min_length=16)
    weighted = t5.tokenize_t5("a photo of a (cat:1.5)", min_length=16)
    base, pooled, extra = t5.encode_t5(model, plain)
    out, _, _ = t5.encode_t5(model, weighted)
    assert pooled is None and extra == {} and base.shape == (1, 16, TINY.width)
    empty, _, _ = t5.encode_t5(model, [[(1, 1.0)] + [(0, 1.0)] * 15])
    cat = [i for i, (tok, w) in enumerate(weighted[0]) if w != 1.0]
    assert cat
    for i in cat:
        assert torch.allclose(out[0, i], (base[0, i] - empty[0, i]) * 1.5 + empty[0, i], atol=1e-5)
    others = [i for i in range(16) if i not in cat]
    assert torch.allclose(out[0, others], base[0, others])
    _, _, masked = t5.encode_t5(model, plain, attention_mask=True)
    assert masked["attention_mask"].tolist() == [[1] * 8 + [0] * 8]
