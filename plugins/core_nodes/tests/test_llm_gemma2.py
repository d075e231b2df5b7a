"""Gemma 2 as a variant of the decoder, against transformers' Gemma2Model (a test-only oracle).

A narrow network with a sliding window of 4 tokens, a query scale apart
from the head width and a low soft cap, so each Gemma choice changes the
numbers of a 9-token prompt; the weights are the same tensors on both sides.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from _oracle import close, randomize

from comfy_kernel_core_nodes.components.llm.decoder import GEMMA2_2B, DecoderLM

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

SMALL = replace(GEMMA2_2B, vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4,
                num_kv_heads=2, head_dim=32, sliding_window=4, query_pre_attn_scalar=24.0, attn_softcap=3.0,
                final_softcap=5.0)


def oracle(sd: dict[str, torch.Tensor]):
    c = SMALL
    config = transformers.Gemma2Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim, sliding_window=c.sliding_window, query_pre_attn_scalar=int(c.query_pre_attn_scalar),
        attn_logit_softcapping=c.attn_softcap, final_logit_softcapping=c.final_softcap,
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=c.rms_norm_eps, attn_implementation="eager")
    model = transformers.Gemma2ForCausalLM(config).eval()
    missing = model.load_state_dict(sd, strict=False)
    assert not missing.unexpected_keys and set(missing.missing_keys) <= {"lm_head.weight"}
    model.tie_weights()
    return model


def test_gemma2_matches_transformers_beyond_the_sliding_window():
    ours = DecoderLM(SMALL).eval()
    sd = randomize(ours, 3)
    # Gemma's norms scale by (1 + weight): random weights around 0 keep them O(1)
    sd = {k: (v - 1 if v.ndim == 1 and "norm" in k else v) for k, v in sd.items()}
    ours.load_state_dict(sd)
    ref = oracle(sd)
    ids = torch.tensor([[2, 5, 17, 40, 8, 91, 33, 3, 60]])
    with torch.no_grad():
        final, hidden = ours(ours.embed(ids), hidden_layer=-2)
        out = ref(ids, output_hidden_states=True)
    states = out.hidden_states
    close(hidden, states[-2])
    close(final, states[-1])
    close(ours.logits(final), out.logits)
    all_states = ours.all_states(ours.embed(ids))
    for i in range(len(states)):
        close(all_states[:, i], states[i])


def test_gemma2_window_changes_the_result():
    """The window hides keys on the first and third layers only: a wider one changes the late tokens."""
    ours = DecoderLM(SMALL).eval()
    sd = randomize(ours, 4)
    wide = DecoderLM(replace(SMALL, sliding_window=None)).eval()
    wide.load_state_dict(sd)
    ids = torch.arange(1, 10)[None]
    with torch.no_grad():
        a, _ = ours(ours.embed(ids))
        b, _ = wide(wide.embed(ids))
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3


def test_gemma2_cached_steps_equal_the_full_pass():
    """Generation's cached steps see the same window as one full pass."""
    ours = DecoderLM(SMALL).eval()
    randomize(ours, 5)
    ids = torch.arange(3, 12)[None]
    with torch.no_grad():
        full, _ = ours(ours.embed(ids))
        cache: list[list] = [[] for _ in range(SMALL.num_layers)]
        first = ours.step(ours.embed(ids[:, :5]), torch.ones(1, 5), cache)
        rest = [ours.step(ours.embed(ids[:, i:i + 1]), torch.ones(1, i + 1), cache) for i in range(5, 9)]
    close(torch.cat([first] + rest, dim=1), full)
