"""Text generation (components/llm/generate.py) against Hugging Face transformers' ``generate``.

Tiny random-weight Qwen3 (tied embeddings, q/k norms) and Qwen2.5 (q/k/v
biases, its own ``lm_head``) decoders load the same weights into both;
greedy generation must give the same tokens, with the key/value cache and
without it. transformers is a test-only oracle.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from comfy_kernel_core_nodes.components.llm import decoder as D
from comfy_kernel_core_nodes.components.llm.generate import Sampling, generate, next_token

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.timeout(120)

QWEN3 = D.LLMConfig(vocab_size=320, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4,
                    num_kv_heads=2, head_dim=32, qk_norm=True, rope_theta=1e6)
QWEN25 = D.LLMConfig(vocab_size=320, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4,
                     num_kv_heads=2, head_dim=16, qkv_bias=True, rope_theta=1e6, lm_head=True)
CONFIGS = {"qwen3": QWEN3, "qwen2.5": QWEN25}


def _decoder(config: D.LLMConfig, seed: int = 0) -> D.DecoderLM:
    torch.manual_seed(seed)
    model = D.DecoderLM(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:  # large enough scores that the argmax is far from ties
                p.copy_(torch.randn_like(p) * (0.5 if "embed" in name else 1.5 * p.shape[-1] ** -0.5))
    return model


def _oracle(variant: str, ours: D.DecoderLM):
    config = ours.config
    common = dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                  intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                  num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                  rms_norm_eps=config.rms_norm_eps, rope_theta=config.rope_theta, attn_implementation="eager",
                  max_position_embeddings=512, tie_word_embeddings=not config.lm_head)
    if variant == "qwen3":
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=config.head_dim, **common))
    else:
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    state = ours.state_dict()
    if not config.lm_head:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    hf.load_state_dict(state)
    return hf.eval()


def _prompt(config: D.LLMConfig, length: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))


def _hf_greedy(hf, ids: torch.Tensor, new: int, eos: int | None = None) -> list[int]:
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                          eos_token_id=eos, pad_token_id=0, temperature=None, top_p=None, top_k=None)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no_cache"])
@pytest.mark.parametrize("variant", sorted(CONFIGS))
def test_greedy_generation_matches_transformers(variant, use_cache):
    ours = _decoder(CONFIGS[variant])
    hf = _oracle(variant, ours)
    ids = _prompt(ours.config)
    expected = _hf_greedy(hf, ids, 24)
    got = generate(ours, ours.embed(ids), 24, stop_tokens=(), use_cache=use_cache)
    assert got == expected
    assert len(set(got)) > 3  # a real sequence, not one token repeated


@pytest.mark.parametrize("variant", sorted(CONFIGS))
def test_cached_steps_give_the_full_forward_scores(variant):
    ours = _decoder(CONFIGS[variant], seed=3)
    ids = _prompt(ours.config, 12, seed=4)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full, _ = ours(ours.embed(ids))
        cache: list[list] = [[] for _ in ours.model.layers]
        parts = [ours.step(ours.embed(ids[:, :5]), mask[:, :5], cache),
                 ours.step(ours.embed(ids[:, 5:6]), mask[:, :6], cache),
                 ours.step(ours.embed(ids[:, 6:]), mask, cache)]
    assert cache[0][0][0].shape[2] == 12  # every layer holds the keys of all 12 positions
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)
    assert torch.allclose(ours.logits(full[0, -1]), ours.logits(parts[-1][0, -1]), atol=1e-4)


def test_generation_stops_after_the_stop_token():
    ours = _decoder(QWEN3)
    hf = _oracle("qwen3", ours)
    ids = _prompt(QWEN3)
    free = generate(ours, ours.embed(ids), 20, stop_tokens=())
    stop = free[5]
    first = free.index(stop)
    got = generate(ours, ours.embed(ids), 20, stop_tokens=(stop, 10_000))
    assert got == free[:first + 1] and got[-1] == stop
    assert got == _hf_greedy(hf, ids, 20, eos=stop)


def test_sampling_is_reproducible_per_seed():
    ours = _decoder(QWEN3, seed=5)
    embeds = ours.embed(_prompt(QWEN3, seed=6))
    hot = dict(do_sample=True, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    first = generate(ours, embeds, 16, Sampling(seed=42, **hot), stop_tokens=())
    assert generate(ours, embeds, 16, Sampling(seed=42, **hot), stop_tokens=()) == first
    assert generate(ours, embeds, 16, Sampling(seed=43, **hot), stop_tokens=()) != first
    greedy = generate(ours, embeds, 16, stop_tokens=())
    assert first != greedy
    # top_k=1 leaves one candidate: sampling then is greedy whatever the seed
    assert generate(ours, embeds, 16, Sampling(do_sample=True, top_k=1, seed=9), stop_tokens=()) == greedy
    # sampling off ignores the other settings
    assert generate(ours, embeds, 16, Sampling(do_sample=False, temperature=1.5, seed=1), stop_tokens=()) == greedy


def test_the_draw_uses_a_generator_seeded_like_comfyui():
    """One step by hand: a CPU generator seeded with the seed, one multinomial draw over the softmax."""
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    sampling = Sampling(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, seed=1234)
    expected = torch.multinomial(torch.softmax(logits / 0.7, dim=-1), 1,
                                 generator=torch.Generator().manual_seed(1234))
    assert next_token(logits, sampling, [], torch.Generator().manual_seed(1234)) == int(expected)


def test_filters_and_penalties():
    logits = torch.tensor([4.0, 3.0, 2.0, -1.0, 0.5])
    pick = lambda s, h=(): {next_token(logits, s, list(h), torch.Generator().manual_seed(i))  # noqa: E731
                            for i in range(200)}
    assert pick(Sampling(do_sample=True, top_k=2, top_p=1.0)) == {0, 1}
    assert pick(Sampling(do_sample=True, top_k=0, top_p=1.0, min_p=0.3)) == {0, 1}  # e^-1 > 0.3 > e^-2
    assert pick(Sampling(do_sample=True, top_k=0, top_p=0.5)) == {0}  # the best alone holds > 0.5
    # a repetition penalty of 100 makes the two best, already generated, unlikely against token 2
    assert pick(Sampling(do_sample=True, top_k=1, top_p=1.0, repetition_penalty=100.0), h=(0, 1)) == {2}
    assert pick(Sampling(do_sample=True, top_k=1, top_p=1.0, presence_penalty=3.0), h=(0,)) == {1}


def test_multimodal_positions_continue_after_the_largest():
    """With 3-axis rotary, positions equal on every axis behave as plain positions, prompt and new tokens alike."""
    config = replace(QWEN25, rope_sections=(2, 3, 3))
    ours = _decoder(config, seed=7)
    embeds = ours.embed(_prompt(config, 8, seed=8))
    plain = generate(ours, embeds, 10, stop_tokens=())
    positions = torch.arange(8)[None, None].expand(3, 1, 8)
    assert generate(ours, embeds, 10, stop_tokens=(), positions=positions) == plain
    assert generate(ours, embeds, 10, stop_tokens=(), positions=positions, use_cache=False) == plain
