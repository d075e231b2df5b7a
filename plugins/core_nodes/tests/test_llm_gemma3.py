"""Gemma 3 as a variant of the decoder, against transformers' Gemma3TextModel (a test-only oracle).

A narrow seven-layer network (layers 0-4 and 6 attend within a window of 4
tokens, layer 5 globally), with the 12B's two rotary bases and its linear
position scaling on the global layer, so each Gemma 3 choice changes the
numbers of an 11-token prompt; the weights are the same tensors on both sides.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from _oracle import close, randomize

from comfy_kernel_core_nodes.components.llm.decoder import GEMMA3_12B, DecoderLM

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

SMALL = replace(GEMMA3_12B, vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=7, num_heads=4,
                num_kv_heads=2, head_dim=16, sliding_window=4, query_pre_attn_scalar=24.0)
IDS = torch.tensor([[2, 5, 17, 40, 8, 91, 33, 3, 60, 11, 70]])


def oracle(sd: dict[str, torch.Tensor], config=SMALL):
    c = config
    hf = transformers.Gemma3TextConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim, sliding_window=c.sliding_window, query_pre_attn_scalar=int(c.query_pre_attn_scalar),
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=c.rms_norm_eps, attn_implementation="eager",
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": c.rope_scale, "rope_theta": c.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": c.local_rope_theta}},
        layer_types=["full_attention" if (i + 1) % c.global_every == 0 else "sliding_attention"
                     for i in range(c.num_layers)])
    model = transformers.Gemma3ForCausalLM(hf).eval()
    missing = model.load_state_dict(sd, strict=False)
    assert not missing.unexpected_keys and set(missing.missing_keys) <= {"lm_head.weight"}
    model.tie_weights()
    return model


def gemma_weights(module: DecoderLM, seed: int) -> dict[str, torch.Tensor]:
    sd = randomize(module, seed)
    # Gemma's norms scale by (1 + weight): random weights around 0 keep them O(1)
    sd = {k: (v - 1 if v.ndim == 1 and "norm" in k else v) for k, v in sd.items()}
    module.load_state_dict(sd)
    return sd


def test_gemma3_matches_transformers_hidden_states_and_logits():
    ours = DecoderLM(SMALL).eval()
    sd = gemma_weights(ours, 3)
    ref = oracle(sd)
    with torch.no_grad():
        final, hidden = ours(ours.embed(IDS), hidden_layer=-2)
        out = ref(IDS, output_hidden_states=True)
        all_states = ours.all_states(ours.embed(IDS))
    states = out.hidden_states
    assert len(states) == all_states.shape[1] == SMALL.num_layers + 1
    close(hidden, states[-2], 1e-5)
    close(final, states[-1], 1e-5)
    close(ours.logits(final), out.logits, 1e-5)
    for i in range(len(states)):
        close(all_states[:, i], states[i], 1e-5)


def test_gemma3_layer_pattern_and_rotary_bases_matter():
    """Layer 5 is the only global one; the global scaling and the local base each change the late tokens."""
    ours = DecoderLM(SMALL).eval()
    assert [layer.local for layer in ours.model.layers] == [True] * 5 + [False, True]
    sd = gemma_weights(ours, 4)
    with torch.no_grad():
        base, _ = ours(ours.embed(IDS))
        for change in ({"rope_scale": 1.0}, {"local_rope_theta": None}, {"sliding_window": None}):
            other = DecoderLM(replace(SMALL, **change)).eval()
            other.load_state_dict(sd)
            changed, _ = other(other.embed(IDS))
            assert (changed[:, 5:] - base[:, 5:]).abs().max() > 1e-4, change


def test_gemma3_cached_steps_equal_the_full_pass():
    """Generation's cached steps see the same windows and rotary tables as one full pass."""
    ours = DecoderLM(SMALL).eval()
    gemma_weights(ours, 5)
    with torch.no_grad():
        full, _ = ours(ours.embed(IDS))
        cache: list[list] = [[] for _ in ours.model.layers]
        first = ours.step(ours.embed(IDS[:, :6]), torch.ones(1, 6, dtype=torch.long), cache)
        rest = [ours.step(ours.embed(IDS[:, i:i + 1]), torch.ones(1, i + 1, dtype=torch.long), cache)
                for i in range(6, IDS.shape[1])]
    torch.testing.assert_close(torch.cat([first] + rest, dim=1), full, atol=1e-5, rtol=1e-5)
