"""Model patch nodes: each patch runs at its patch point, and the sampled latents equal ComfyUI 0.3.64's.

``test_patched_models_match_comfyui`` samples every patch node through a real
server and compares the latents with what ComfyUI's own nodes produced for the
same graph (``data/sampling_nodes``). The in-process tests wrap the functions a
node registered and record where the network or the guidance called them
(``transformer_options["block"]``, the batch's ``cond_or_uncond``, sigma), so a
patch that ran at the wrong block, or not at all, fails even where the latent
would hide it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _sampling_graphs as graphs  # noqa: E402
from _graph_refs import check, expected, install_checkpoint  # noqa: E402
from _nodes import tiny_sd  # noqa: E402

from comfy_kernel_core_nodes.nodes import guidance, ksampler, latent  # noqa: E402
from comfy_kernel_core_nodes.nodes import model_advanced as ma  # noqa: E402
from comfy_kernel_core_nodes.nodes import model_tools as mt  # noqa: E402
from comfy_kernel_core_nodes.nodes import unet_patches as up  # noqa: E402

STEPS = 2

#: probes whose latent grows to hundreds with random weights, so float round-off grows with it
#: (lcm re-noises the denoised sample at every step)
LOOSER = {"lcm": 1e-3}


# --- through the server, against ComfyUI ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_patched_models_match_comfyui(graph_server, sd15_tiny_checkpoint):
    install_checkpoint(graph_server, sd15_tiny_checkpoint)
    prompt = graphs.patch_graph()
    recorded = graph_server.run(prompt, timeout=1800)
    names = [n["inputs"]["name"] for n in prompt.values() if n["class_type"] == "TestProbe"]
    assert sorted(recorded) == sorted(names)
    failures = [str(e) for name in names for e in check(name, recorded[name], LOOSER.get(name, 1e-4))]
    assert failures == []
    baseline = recorded["baseline"]["samples"]
    for name in names:  # every patch changed the image (so the comparison above means something)
        if name not in ("baseline", "inpaint", "temporal_attention_x", "clip_attention_x"):
            assert not np.allclose(recorded[name]["samples"][:1], baseline, atol=1e-4), name
    # the differential mask keeps more of the source latent than plain inpainting
    src = recorded["inpaint"]["samples"]
    assert not np.allclose(recorded["diff_diffusion"]["samples"], src)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_caches_match_comfyui(graph_server, sd15_tiny_checkpoint):
    install_checkpoint(graph_server, sd15_tiny_checkpoint)
    recorded = graph_server.run(graphs.cache_graph(), timeout=1800)
    assert [str(e) for name in ("cache_baseline", "easycache", "lazycache") for e in check(name, recorded[name])] == []
    assert not np.allclose(recorded["easycache"]["samples"], recorded["cache_baseline"]["samples"])


@pytest.mark.slow
def test_patches_without_a_comfyui_record(graph_server, sd15_tiny_checkpoint):
    """Skip Layer Guidance on a UNet (no DiT blocks: the baseline image), compute dtype, torch.compile's node."""
    install_checkpoint(graph_server, sd15_tiny_checkpoint)
    g = graphs.Graph()
    g.ksampler("slg", g.add("slg", "SkipLayerGuidanceDiT", model=g.model, double_layers="1, 2", single_layers="",
                            scale=3.0, start_percent=0.0, end_percent=1.0, rescaling_scale=0.5))
    g.ksampler("slg_simple", g.add("slg_simple", "SkipLayerGuidanceDiTSimple", model=g.model, double_layers="1",
                                   single_layers="2", start_percent=0.0, end_percent=1.0))
    g.ksampler("bf16", g.add("bf16", "ModelComputeDtype", model=g.model, dtype="bf16"))
    g.probe("compiled", g.add("compiled", "TorchCompileModel", model=g.model, backend="inductor"))
    recorded = graph_server.run(g.nodes, timeout=1800)
    assert check("baseline", recorded["slg_simple"]) == []
    # rescaling_scale 0.5 rescales towards the positive's std even though the skip changed nothing
    assert check("baseline", recorded["slg"]) != []
    baseline = expected("baseline")
    bf16 = recorded["bf16"]["samples"]
    assert not np.array_equal(bf16, baseline) and np.abs(bf16 - baseline).max() <= 0.05 * np.abs(baseline).max()
    assert "ModelPatcher" in recorded["compiled"]


# --- in-process: where each patch runs -----------------------------------------------------


@pytest.fixture(scope="module")
def sd(tmp_path_factory, sd15_tiny_checkpoint, single_torch_thread):
    return tiny_sd(tmp_path_factory.mktemp("patches"), sd15_tiny_checkpoint, 1)


def sample(sd: dict, model: Any, latent_image: dict | None = None, cfg: float = 7.0, **kw: Any) -> torch.Tensor:
    (out,) = ksampler.KSampler().sample(model, 42, kw.pop("steps", STEPS), cfg, kw.pop("sampler", "euler"),
                                        kw.pop("scheduler", "normal"), kw.pop("positive", sd["pos"]), sd["neg"],
                                        latent_image or sd["empty"], **kw)
    return out["samples"]


class Calls(list):
    """What a wrapped patch saw at each call: block, index in the block, batch sides, shapes in and out."""


def _options_of(args: tuple) -> dict[str, Any]:
    return next(a for a in reversed(args) if isinstance(a, dict))


def spy(fn: Any, calls: Calls) -> Any:
    def wrapped(*args: Any) -> Any:
        options = _options_of(args)
        first_in = args[0].clone()  # patches may change their input in place (FreeU does)
        result = fn(*args)
        first_out = result[0] if isinstance(result, tuple) else result
        calls.append({"block": options.get("block"), "block_index": options.get("block_index"),
                      "cond_or_uncond": list(options.get("cond_or_uncond", [])),
                      "in": tuple(first_in.shape), "out": tuple(first_out.shape),
                      "changed": first_in.shape != first_out.shape or not torch.equal(first_in, first_out)})
        return result

    return wrapped


def spy_patch(model: Any, name: str) -> Calls:
    calls = Calls()
    patches = model.model_options["transformer_options"]["patches"]
    patches[name] = [spy(p, calls) for p in patches[name]]
    return calls


def record_evaluations(model: Any) -> list[dict[str, Any]]:
    """Every network evaluation of a sampling run: the batch sides and the attention replacements in force."""
    from comfy_kernel_core_nodes.model import extension

    seen: list[dict[str, Any]] = []

    def wrapper(executor: Any, x: Any, t: Any, *args: Any, **kwargs: Any) -> Any:
        options = kwargs.get("transformer_options") or args[3]
        seen.append({"sides": list(options.get("cond_or_uncond", [])), "sigma": float(t[0]),
                     "replace": {name: sorted(v) for name, v in options.get("patches_replace", {}).items()},
                     "dtype": x.dtype})
        return executor(x, t, *args, **kwargs)

    model.add_wrapper_with_key(extension.WrappersMP.APPLY_MODEL, "test", wrapper)
    return seen


def blocks(calls: Calls) -> list:
    return sorted({tuple(c["block"]) for c in calls})


def test_freeu_scales_the_decoder_blocks_of_twice_the_base_width(sd):
    (m,) = up.FreeU().patch(sd["model"], 1.3, 1.4, 0.9, 0.2)
    calls = spy_patch(m, "output_block_patch")
    out = sample(sd, m)
    assert blocks(calls) == [("output", i) for i in range(4)]
    assert len(calls) == 4 * STEPS
    # the tiny UNet's decoder features have 640 channels (2 x 320) entering output blocks 0-2, 320 at block 3
    assert {c["block"][1] for c in calls if c["changed"]} == {0, 1, 2}
    assert not torch.equal(out, sample(sd, sd["model"]))


def test_deep_shrink_halves_the_chosen_input_block_while_sigma_is_in_range(sd):
    (m,) = up.PatchModelAddDownscale.execute(sd["model"], 1, 2.0, 0.0, 0.5, True, "bicubic", "bicubic").args
    down = spy_patch(m, "input_block_patch_after_skip")
    upscaled = spy_patch(m, "output_block_patch")
    sample(sd, m, steps=4)
    assert blocks(down) == [("input", i) for i in range(4)]
    shrunk = [c for c in down if c["changed"]]
    assert shrunk and all(c["block"] == ("input", 1) and c["out"][2:] == (4, 4) for c in shrunk)
    assert 0 < len(shrunk) < 4  # only the first half of the schedule (start 0 .. end 0.5)
    # the decoder upsamples straight to each skip's size, so the resize patch only has to check
    assert blocks(upscaled) == [("output", i) for i in range(4)] and not any(c["changed"] for c in upscaled)


def test_hypertile_and_tome_change_self_attention_at_full_resolution_only(sd):
    (m,) = up.HyperTile.execute(sd["model"], 32, 1, 0, False).args
    tiles = spy_patch(m, "attn1_patch")
    sample(sd, m)
    full = [c for c in tiles if c["in"][1] == 64]
    assert full and all(c["out"][0] == 4 * c["in"][0] and c["out"][1] == 16 for c in full)  # 2x2 tiles of 4x4
    assert all(not c["changed"] for c in tiles if c["in"][1] != 64)

    (m,) = up.TomePatchModel.execute(sd["model"], 0.5).args
    merges = spy_patch(m, "attn1_patch")
    sample(sd, m)
    assert {c["block"] for c in merges if c["changed"]} <= {("input", 1), ("output", 2), ("output", 3)}
    assert all(c["out"][1] == 32 for c in merges if c["in"][1] == 64)  # half of 8x8 tokens merged away


def test_pag_replaces_middle_self_attention_in_an_extra_positive_pass(sd, monkeypatch):
    from comfy_kernel_core_nodes.patches import reguidance

    identity_calls = Calls()
    monkeypatch.setattr(reguidance, "_identity_attention", spy(reguidance._identity_attention, identity_calls))
    (m,) = up.PerturbedAttentionGuidance.execute(sd["model"], 2.0).args
    evaluations = record_evaluations(m)
    sample(sd, m)
    assert [e["sides"] for e in evaluations] == [[1, 0], [0]] * STEPS
    assert [e["replace"] for e in evaluations] == [{}, {"attn1": [("middle", 0)]}] * STEPS
    assert [(c["block"], c["block_index"], c["cond_or_uncond"]) for c in identity_calls] == \
        [(("middle", 0), 0, [0])] * STEPS


def test_sag_records_the_negative_middle_attention_and_reruns_the_negative(sd):
    (m,) = up.SelfAttentionGuidance.execute(sd["model"], 0.5, 2.0).args
    replace = m.model_options["transformer_options"]["patches_replace"]["attn1"]
    assert list(replace) == [("middle", 0, 0)]
    calls = Calls()
    replace[("middle", 0, 0)] = spy(replace[("middle", 0, 0)], calls)
    evaluations = record_evaluations(m)
    sample(sd, m, cfg=1.0)  # SAG needs the negative even at cfg 1
    # the extra pass evaluates [uncond] alone (its index in that call's list is 0)
    assert [e["sides"] for e in evaluations] == [[1, 0], [0]] * STEPS
    assert [(c["block"], c["block_index"]) for c in calls] == [(("middle", 0), 0)] * (2 * STEPS)


def test_guidance_functions_run_once_per_step(sd):
    cases = [
        (ma.RescaleCFG().patch(sd["model"], 0.7)[0], "sampler_cfg_function"),
        (guidance.APG.execute(sd["model"], 0.5, 3.0, 0.3).args[0], "sampler_pre_cfg_function"),
        (guidance.CFGZeroStar.execute(sd["model"]).args[0], "sampler_post_cfg_function"),
        (guidance.TCFG.execute(sd["model"]).args[0], "sampler_pre_cfg_function"),
        (up.EpsilonScaling.execute(sd["model"], 1.01).args[0], "sampler_post_cfg_function"),
    ]
    baseline = sample(sd, sd["model"])
    for m, point in cases:
        sigmas: list[float] = []
        options = m.model_options
        fn = options[point]
        if isinstance(fn, list):
            (fn,) = fn

        def recording(args: dict, fn: Any = fn, sigmas: list = sigmas) -> Any:
            sigmas.append(float(args["sigma"][0]))
            return fn(args)

        options[point] = [recording] if point != "sampler_cfg_function" else recording
        assert not torch.equal(sample(sd, m), baseline), point
        assert len(sigmas) == STEPS and sigmas[0] > sigmas[1] > 0, point


def test_skip_layer_guidance_sets_the_dit_block_replacements(sd):
    from comfy_kernel_core_nodes.patches.reguidance import skip_layer_options

    options = skip_layer_options({"transformer_options": {"patches_replace": {"attn1": {("middle", 0): None}}}},
                                 [7, 8], [9])
    assert sorted(options["transformer_options"]["patches_replace"]["dit"]) == [
        ("double_block", 7), ("double_block", 8), ("single_block", 9)]

    (m,) = guidance.SkipLayerGuidanceDiT.execute(sd["model"], 3.0, 0.0, 1.0, "7, 8", "9", 0.0).args
    evaluations = record_evaluations(m)
    out = sample(sd, m)
    extra = [e for e in evaluations if e["sides"] == [0]]
    assert len(extra) == STEPS and all(e["replace"]["dit"] == [("double_block", 7), ("double_block", 8),
                                                               ("single_block", 9)] for e in extra)
    # the UNet has no DiT blocks: the skipped-layer prediction is the positive itself, guidance unchanged
    reference = sample(sd, sd["model"])
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()

    (m,) = guidance.SkipLayerGuidanceDiTSimple.execute(sd["model"], 0.0, 1.0, "3", "").args
    evaluations = record_evaluations(m)
    sample(sd, m)
    assert [(e["sides"], e["replace"].get("dit")) for e in evaluations] == \
        [([0], None), ([1], [("double_block", 3)])] * STEPS
    (same,) = guidance.SkipLayerGuidanceDiT.execute(sd["model"], 3.0, 0.0, 1.0, "", "", 0.0).args
    assert same is sd["model"]  # no layers: the model unchanged, as in ComfyUI


def test_differential_diffusion_thresholds_the_mask_each_step(sd):
    ramp = torch.linspace(0, 1, 64).repeat(64, 1)[None]
    (masked,) = latent.SetLatentNoiseMask().set_mask(sd["empty"], ramp)
    (m,) = mt.DifferentialDiffusion.execute(sd["model"], 1.0).args
    masks: list[torch.Tensor] = []
    fn = m.model_options["denoise_mask_function"]

    def recording(sigma: Any, denoise_mask: Any, extra_options: dict) -> Any:
        out = fn(sigma, denoise_mask, extra_options=extra_options)
        masks.append(out)
        return out

    m.model_options["denoise_mask_function"] = recording
    sample(sd, m, latent_image=masked, steps=4)
    assert len(masks) == 4
    fractions = [float(mask.mean()) for mask in masks]
    assert all(set(mask.unique().tolist()) <= {0.0, 1.0} for mask in masks)
    assert fractions == sorted(fractions) and fractions[0] < fractions[-1]  # more is denoised as sigma falls


def test_attention_multipliers_scale_the_projection_weights(sd):
    (m,) = mt.UNetSelfAttentionMultiply.execute(sd["model"], 1.25, 1.0, 0.5, 1.0).args
    keys = sorted(m.patches)
    assert keys and all(".attn1.to_q." in k or ".attn1.to_v." in k for k in keys)
    with sd["model"].use() as base, m.use() as scaled:
        b = base.diffusion_model.middle_block[1].transformer_blocks[0].attn1
        s = scaled.diffusion_model.middle_block[1].transformer_blocks[0].attn1
        assert torch.equal(s.to_q.weight, b.to_q.weight * 1.25) and torch.equal(s.to_v.weight, b.to_v.weight * 0.5)
        assert torch.equal(s.to_k.weight, b.to_k.weight)
    (c,) = mt.CLIPAttentionMultiply.execute(sd["clip"], 1.0, 1.0, 1.0, 0.5).args
    assert c.patcher.patches and all("self_attn.out_proj" in k for k in c.patcher.patches)
    assert not sd["clip"].patcher.patches  # the input CLIP is untouched


def test_model_compute_dtype_runs_the_unet_in_that_dtype(sd):
    from comfy_kernel_core_nodes.model import extension

    (m,) = ma.ModelComputeDtype().patch(sd["model"], "bf16")
    dtypes: set[torch.dtype] = set()

    def network_input(executor: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        dtypes.add(x.dtype)
        return executor(x, *args, **kwargs)

    m.add_wrapper_with_key(extension.WrappersMP.DIFFUSION_MODEL, "test", network_input)
    out = sample(sd, m)
    assert dtypes == {torch.bfloat16}
    reference = sample(sd, sd["model"])
    assert out.dtype == torch.float32 and not torch.equal(out, reference)
    assert (out - reference).abs().max() <= 0.05 * reference.abs().max()  # bf16 rounding, not another image
    (default,) = ma.ModelComputeDtype().patch(sd["model"], "default")
    assert torch.equal(sample(sd, default), reference)


def test_model_sampling_nodes_patch_only_the_clone(sd):
    model = sd["model"]
    (lcm,) = ma.ModelSamplingDiscrete().patch(model, "lcm", False)
    ms = lcm.get_model_object("model_sampling")
    assert len(ms.sigmas) == 50 and int(ms.timestep(ms.sigmas[-1:])) == 999
    assert len(model.get_model_object("model_sampling").sigmas) == 1000
    (playground,) = ma.ModelSamplingContinuousEDM().patch(model, "edm_playground_v2.5", 80.0, 0.002)
    assert type(playground.get_model_object("latent_format")).__name__ == "SDXL_Playground_2_5"
    assert playground.get_model_object("model_sampling").sigma_data == 0.5


def test_easycache_and_lazycache_skip_network_evaluations(sd):
    from comfy_kernel_core_nodes.model import extension

    def network_calls(model: Any) -> list[int]:
        calls: list[int] = []

        def count(executor: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(x.shape[0])
            return executor(x, *args, **kwargs)

        model.add_wrapper_with_key(extension.WrappersMP.DIFFUSION_MODEL, "test", count)
        return calls

    plain = sd["model"].clone()
    plain_calls = network_calls(plain)
    reference = sample(sd, plain, steps=10)
    assert len(plain_calls) == 10
    for node in (mt.EasyCache, mt.LazyCache):
        (m,) = node.execute(sd["model"], 1.0, 0.1, 0.9, False).args
        calls = network_calls(m)
        out = sample(sd, m, steps=10)
        evaluated = len(calls)
        assert 3 <= evaluated < 10, node  # steps in the middle of the schedule were reused
        assert not torch.equal(out, reference)
        torch.testing.assert_close(sample(sd, m, steps=10), out)  # a new run starts from a fresh state
        assert len(calls) == 2 * evaluated
