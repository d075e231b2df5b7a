"""Gemma 4's language model against transformers on tiny random weights: the 12B "unified" stack's hidden
states, the dense stack with per-layer inputs (E2B, LTX-2.5's prompt enhancer): hidden states, logits and
greedy generation, and both key layouts."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from _random_weights import module_shapes
from safetensors.torch import load_file

from comfy_kernel_core_nodes.components.llm import gemma4
from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM, LLMConfig
from comfy_kernel_core_nodes.components.llm.generate import generate
from comfy_kernel_core_nodes.model import ops

transformers = pytest.importorskip("transformers")

SLIDING, FULL = gemma4.SLIDING, gemma4.FULL
PROMPT = 10  # longer than the sliding window (4)


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Small noise on every parameter (nothing stays an identity) and layer scalars of 0.9."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.fill_(0.9)
    return model.eval()


def _shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _load(config: gemma4.Gemma4Config, sd: dict[str, torch.Tensor], ops_: object = ops.plain,
          compute_dtype: torch.dtype | None = None) -> gemma4.Gemma4LM:
    model = gemma4.Gemma4LM(config, ops_, compute_dtype).eval()
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd, strict=True)
    return model


def _ids(seed: int, length: int = PROMPT) -> torch.Tensor:
    return torch.randint(3, 300, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def unified():
    from transformers.models.gemma4_unified.configuration_gemma4_unified import Gemma4UnifiedTextConfig
    from transformers.models.gemma4_unified.modeling_gemma4_unified import Gemma4UnifiedTextModel

    torch.manual_seed(0)
    config = Gemma4UnifiedTextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=9, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1, sliding_window=4,
        attention_k_eq_v=True, num_kv_shared_layers=2, use_double_wide_mlp=True)
    oracle = _perturb(Gemma4UnifiedTextModel(config), seed=1)
    return config, oracle, {"model." + k: v for k, v in oracle.state_dict().items()}


@pytest.fixture(scope="module")
def dense():
    from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig
    from transformers.models.gemma4.modeling_gemma4 import Gemma4ForCausalLM

    torch.manual_seed(0)
    config = Gemma4TextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=7, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, global_head_dim=32, sliding_window=4, num_kv_shared_layers=3,
        use_double_wide_mlp=True, hidden_size_per_layer_input=8, vocab_size_per_layer_input=300,
        final_logit_softcapping=30.0, layer_types=[SLIDING, SLIDING, FULL, SLIDING, SLIDING, SLIDING, FULL])
    oracle = _perturb(Gemma4ForCausalLM(config), seed=2)
    sd = {k: v for k, v in oracle.state_dict().items() if k != "lm_head.weight"}  # tied: not in the files
    return config, oracle, sd, _load(gemma4.Gemma4Config.from_hf(config.to_dict()), sd)


def test_unified_hidden_states_match_transformers(unified):
    config, oracle, sd = unified
    ours_config = gemma4.Gemma4Config.from_hf(config.to_dict())
    assert ours_config.k_eq_v and ours_config.kv_shared == 2 and ours_config.double_wide_mlp
    assert not ours_config.per_layer_width
    model = _load(ours_config, sd)
    ids = _ids(3, 11)
    with torch.no_grad():
        theirs = torch.stack(oracle(input_ids=ids, output_hidden_states=True).hidden_states, dim=1)
        embeds = model.embed(ids)
        ours = model.all_states(embeds)
        final, after = model(embeds, hidden_layer=-2)
    assert embeds.shape == (1, 11, 64)
    assert ours.shape == theirs.shape == (1, 10, 11, 64)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, ours[:, -1])
    torch.testing.assert_close(after, ours[:, -2])
    # the window and soft cap are not in the shapes: Gemma 4's own are assumed
    assert gemma4.config_from_shapes(_shapes(sd)) == dataclasses.replace(
        ours_config, sliding_window=1024, final_softcap=gemma4.FINAL_SOFTCAP)


def test_dense_hidden_states_and_logits_match_transformers(dense):
    config, oracle, sd, model = dense
    assert model.config.per_layer_width == 8 and model.config.final_softcap == 30.0
    ids = _ids(4)
    with torch.no_grad():
        out = oracle(input_ids=ids, output_hidden_states=True)
        embeds = model.embed(ids)
        ours = model.all_states(embeds)
        logits = model.logits(ours[:, -1])
    assert embeds.shape == (1, PROMPT, 64 + 7 * 8)  # the per-layer rows ride along
    torch.testing.assert_close(ours, torch.stack(out.hidden_states, dim=1), rtol=1e-5, atol=1e-5)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)
    assert float(logits.abs().max()) < 30.0


@pytest.mark.parametrize("use_cache", [True, False])
def test_dense_greedy_generation_matches_transformers(dense, use_cache):
    config, oracle, sd, model = dense
    for seed in (5, 6):
        ids = _ids(seed)
        with torch.no_grad():
            theirs = oracle.generate(ids, do_sample=False, max_new_tokens=8, eos_token_id=None, pad_token_id=0,
                                     use_cache=use_cache)[0, PROMPT:].tolist()
        assert len(theirs) == 8
        assert generate(model, model.embed(ids), 8, stop_tokens=(), use_cache=use_cache) == theirs


def test_dense_cached_steps_equal_the_whole_sequence(dense):
    """Chunks of several tokens after a cache the sliding layers have trimmed see what the whole run sees."""
    model = copy.deepcopy(dense[3]).double()  # float64: the orders of the sums differ
    ids = _ids(7, 14)
    with torch.no_grad():
        whole = model.all_states(model.embed(ids))[:, -1]
        cache: list[list] = [[] for _ in model.model.layers]
        parts = []
        for start, end in ((0, 6), (6, 9), (9, 10), (10, 14)):
            mask = torch.ones(1, end, dtype=torch.long)
            parts.append(model.step(model.embed(ids[:, start:end]), mask, cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-12, atol=1e-12)
    sliding = [i for i, kind in enumerate(model.config.layer_types) if kind == SLIDING and not model.config.shared(i)]
    assert all(cache[i][0][0].shape[2] == model.config.sliding_window - 1 for i in sliding)
    assert cache[2][0][0].shape[2] == 14 and not any(cache[i] for i in range(4, 7))


def test_fp8_weights_compute_through_the_ops(dense):
    config, oracle, sd, model = dense
    fp8 = torch.float8_e4m3fn
    stored = {k: v.to(fp8) if v.ndim == 2 else v for k, v in sd.items()}
    rounded = _load(model.config, {k: v.float() for k, v in stored.items()})
    cast = gemma4.Gemma4LM(model.config, ops.manual_cast, torch.float32).eval()
    cast.load_state_dict(stored, strict=True, assign=True)
    ops.set_compute_dtype(cast, torch.float32)
    ids = _ids(8)
    with torch.no_grad():
        expected = rounded.all_states(rounded.embed(ids))
        states = cast.all_states(cast.embed(ids))
        torch.testing.assert_close(states, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cast.logits(states[:, -1]), rounded.logits(expected[:, -1]), rtol=1e-5,
                                   atol=1e-5)


def test_both_key_layouts_load(dense, tmp_path):
    from transformers.models.gemma4.configuration_gemma4 import Gemma4Config, Gemma4VisionConfig
    from transformers.models.gemma4.modeling_gemma4 import Gemma4ForConditionalGeneration

    config, oracle, flat, model = dense
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16)
    multimodal = Gemma4ForConditionalGeneration(Gemma4Config(text_config=config.to_dict(),
                                                             vision_config=vision.to_dict(), audio_config=None))
    multimodal.save_pretrained(tmp_path)
    hf = load_file(str(tmp_path / "model.safetensors"))
    assert any(k.startswith("model.vision_tower.") for k in hf)

    assert gemma4.language_model_prefix(flat) == "model."
    assert gemma4.language_model_prefix(hf) == "model.language_model."
    assert gemma4.rename("model.language_model.layers.3.layer_scalar") == "model.layers.3.layer_scalar"
    assert gemma4.rename("model.norm.weight") == "model.norm.weight"
    assert gemma4.rename("model.vision_tower.encoder.layers.0.mlp.up_proj.linear.weight", "model.") is None
    assert gemma4.rename("text_embedding_projection.weight", "model.") is None
    assert gemma4.rename("lm_head.weight", "model.language_model.") == "lm_head.weight"
    assert gemma4.config_from_shapes(_shapes(hf)) == gemma4.config_from_shapes(_shapes(flat))
    for weights in (flat, hf):
        assert gemma4.is_gemma4(weights)
        picked = gemma4.language_model_weights(weights)
        built = gemma4.Gemma4LM(gemma4.config_from_shapes(_shapes(weights)))
        assert set(picked) == set(built.state_dict()) == set(flat)
        built.load_state_dict(picked, strict=True)
    assert {gemma4.rename(k) for k in hf if k.startswith("model.language_model.")} == set(flat)


def test_gemma3_is_not_gemma4():
    gemma3 = LLMConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=16, qk_norm=True, gemma=True, sliding_window=4, global_every=6)
    with torch.device("meta"):
        shapes = module_shapes(DecoderLM(gemma3))
    assert not gemma4.is_gemma4(shapes)
    assert gemma4.language_model_prefix(shapes) is None
    with pytest.raises(ValueError):
        gemma4.language_model_weights(shapes)


def test_mixture_of_experts_is_refused(dense):
    config = dense[0].to_dict() | {"enable_moe_block": True, "num_experts": 4, "top_k_experts": 2}
    with pytest.raises(ValueError, match="mixture-of-experts"):
        gemma4.Gemma4Config.from_hf({"text_config": config})
