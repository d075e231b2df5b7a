"""Sampling nodes newer than ComfyUI 0.3.64: CFG Override, Dual Model CFG Guider, TSR, ModelNoiseScale, SamplerLCM.

The graphs run through a real server on tiny random-weight Wan 2.1 files (see
_files_wan.py): a one-frame 64x64 video, a few Euler or LCM steps on hand-written
flow sigmas. Each node is checked against a graph of older nodes that must give
the same latent, and against the change it is meant to make.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _files_wan import place, transformer_file, umt5_file

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.timeout(600)]

SIGMAS = "1.0, 0.75, 0.5, 0.25, 0.0"


@pytest.fixture(scope="module")
def server(graph_server):
    models = graph_server.models_dir("diffusion_models")
    place(transformer_file("t2v", seed=1), models, "wan_a.safetensors")
    place(transformer_file("t2v", seed=2), models, "wan_b.safetensors")
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5.safetensors")
    return graph_server


def base(seed: int = 7) -> dict:
    """Loaders, prompts, latent, noise and sigmas shared by every graph; shift 1 so percent p is sigma 1 - p."""
    return {
        "a": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan_a.safetensors", "weight_dtype": "default"}},
        "b": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan_b.safetensors", "weight_dtype": "default"}},
        "ma": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["a", 0], "shift": 1.0}},
        "mb": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["b", 0], "shift": 1.0}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a red fox in snow"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "blurry"}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo",
                   "inputs": {"width": 64, "height": 64, "length": 1, "batch_size": 1}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "ManualSigmas", "inputs": {"sigmas": SIGMAS}},
    }


def sample(prompt: dict, name: str, guider: dict, sampler: list | None = None, sigmas: list | None = None,
           noise: list | None = None, latent: list | None = None) -> None:
    """Add guider ``name``, a SamplerCustomAdvanced over it and a probe of its output called ``name``."""
    prompt[f"{name}_guider"] = guider
    prompt[f"{name}_sample"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": noise or ["noise", 0], "guider": [f"{name}_guider", 0], "sampler": sampler or ["euler", 0],
        "sigmas": sigmas or ["sigmas", 0], "latent_image": latent or ["latent", 0]}}
    prompt[f"{name}_probe"] = {"class_type": "TestProbe", "inputs": {"value": [f"{name}_sample", 0], "name": name}}


def cfg_guider(model: list, cfg: float, positive: list | None = None, negative: list | None = None) -> dict:
    return {"class_type": "CFGGuider", "inputs": {"model": model, "positive": positive or ["pos", 0],
                                                  "negative": negative or ["neg", 0], "cfg": cfg}}


def samples(recorded: dict, name: str) -> np.ndarray:
    return recorded[name]["samples"]


def test_cfg_override_sets_cfg_inside_its_range_only(server):
    prompt = base()
    prompt["all"] = {"class_type": "CFGOverride",
                     "inputs": {"model": ["ma", 0], "cfg": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    # sigmas 0.5 and 0.25 lie in [1 - 1.0, 1 - 0.4]; 1.0 and 0.75 do not
    prompt["late"] = {"class_type": "CFGOverride",
                      "inputs": {"model": ["ma", 0], "cfg": 1.0, "start_percent": 0.4, "end_percent": 1.0}}
    # a second override after the first wins where they overlap: cfg 2 everywhere
    prompt["stacked"] = {"class_type": "CFGOverride",
                         "inputs": {"model": ["all", 0], "cfg": 2.0, "start_percent": 0.0, "end_percent": 1.0}}
    sample(prompt, "plain5", cfg_guider(["ma", 0], 5.0))
    sample(prompt, "plain1", cfg_guider(["ma", 0], 1.0))
    sample(prompt, "plain2", cfg_guider(["ma", 0], 2.0))
    sample(prompt, "over_all", cfg_guider(["all", 0], 5.0))
    sample(prompt, "over_late", cfg_guider(["late", 0], 5.0))
    sample(prompt, "over_stacked", cfg_guider(["stacked", 0], 5.0))
    # the same schedule in two halves: cfg 5 for sigmas 1, 0.75, then cfg 1 for 0.5, 0.25
    prompt["split"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sigmas", 0], "step": 2}}
    prompt["off"] = {"class_type": "DisableNoise", "inputs": {}}
    sample(prompt, "first", cfg_guider(["ma", 0], 5.0), sigmas=["split", 0])
    sample(prompt, "second", cfg_guider(["ma", 0], 1.0), sigmas=["split", 1], noise=["off", 0],
           latent=["first_sample", 0])
    out = server.run(prompt)

    np.testing.assert_array_equal(samples(out, "over_all"), samples(out, "plain1"))
    np.testing.assert_array_equal(samples(out, "over_stacked"), samples(out, "plain2"))
    assert not np.allclose(samples(out, "plain5"), samples(out, "plain1"), atol=1e-3)
    late = samples(out, "over_late")
    np.testing.assert_allclose(late, samples(out, "second"), rtol=1e-4, atol=1e-5)
    assert not np.allclose(late, samples(out, "plain5"), atol=1e-3)
    assert not np.allclose(late, samples(out, "plain1"), atol=1e-3)


def test_dual_model_guider(server):
    prompt = base()
    dual = {"class_type": "DualModelGuider", "inputs": {"model": ["ma", 0], "positive": ["pos", 0], "cfg": 3.0,
                                                         "model_negative": ["ma", 0], "negative": ["neg", 0]}}
    sample(prompt, "dual_same", dual)
    sample(prompt, "cfg_same", cfg_guider(["ma", 0], 3.0))
    only_model = {"class_type": "DualModelGuider", "inputs": {"model": ["ma", 0], "positive": ["pos", 0],
                                                              "cfg": 3.0, "negative": ["neg", 0]}}
    sample(prompt, "dual_one_model", only_model)
    # cfg 0 leaves the negative pass alone: model b on the negative prompt
    neg_only = {"class_type": "DualModelGuider", "inputs": {"model": ["ma", 0], "positive": ["pos", 0], "cfg": 0.0,
                                                            "model_negative": ["mb", 0], "negative": ["neg", 0]}}
    sample(prompt, "dual_cfg0", neg_only)
    sample(prompt, "b_on_negative", cfg_guider(["mb", 0], 1.0, positive=["neg", 0]))
    # cfg 1 skips the negative pass: model a on the positive prompt
    pos_only = {"class_type": "DualModelGuider", "inputs": {"model": ["ma", 0], "positive": ["pos", 0], "cfg": 1.0,
                                                            "model_negative": ["mb", 0], "negative": ["neg", 0]}}
    sample(prompt, "dual_cfg1", pos_only)
    sample(prompt, "a_on_positive", cfg_guider(["ma", 0], 1.0))
    # two models at cfg 3: neither single-model CFG
    two = {"class_type": "DualModelGuider", "inputs": {"model": ["ma", 0], "positive": ["pos", 0], "cfg": 3.0,
                                                       "model_negative": ["mb", 0], "negative": ["neg", 0]}}
    sample(prompt, "dual_two", two)
    sample(prompt, "cfg_b", cfg_guider(["mb", 0], 3.0))
    out = server.run(prompt)

    # the two passes run as separate batches here and as one batch of two in CFGGuider: float rounding differs
    np.testing.assert_allclose(samples(out, "dual_same"), samples(out, "cfg_same"), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(samples(out, "dual_one_model"), samples(out, "cfg_same"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(samples(out, "dual_cfg0"), samples(out, "b_on_negative"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(samples(out, "dual_cfg1"), samples(out, "a_on_positive"), rtol=1e-5, atol=1e-6)
    for other in ("cfg_same", "cfg_b"):
        assert not np.allclose(samples(out, "dual_two"), samples(out, other), atol=1e-3), other


def test_dual_model_guider_without_negative_conditioning():
    """No negative: one entry without any text tensor (an image-only pass); no negative model: plain CFG."""
    from comfy_kernel_core_nodes.nodes.custom_sampler import DualModelGuider
    from comfy_kernel_core_nodes.sampling.guider import CFGGuider
    from comfy_kernel_core_nodes.sampling.guiders import Guider_DualModel

    class Patcher:
        model_options: dict = {}

    positive = [[torch.ones(1, 2, 3), {"pooled_output": torch.ones(1, 3)}]]
    guider = DualModelGuider.execute(Patcher(), positive, 3.0, model_negative=Patcher()).result[0]
    assert type(guider) is Guider_DualModel and guider.cfg == 3.0
    (negative,) = guider.original_conds["negative"]
    assert "cross_attn" not in negative and "pooled_output" not in negative
    assert type(DualModelGuider.execute(Patcher(), positive, 3.0).result[0]) is CFGGuider


def test_temporal_score_rescaling(server):
    prompt = base()
    for name, k in (("tsr_off", 1.0), ("tsr", 0.5)):
        prompt[name] = {"class_type": "TemporalScoreRescaling",
                        "inputs": {"model": ["ma", 0], "tsr_k": k, "tsr_sigma": 1.0}}
        sample(prompt, f"s_{name}", cfg_guider([name, 0], 3.0))
    sample(prompt, "plain", cfg_guider(["ma", 0], 3.0))
    out = server.run(prompt)
    np.testing.assert_array_equal(samples(out, "s_tsr_off"), samples(out, "plain"))
    assert not np.allclose(samples(out, "s_tsr"), samples(out, "plain"), atol=1e-3)


def test_temporal_score_rescaling_formula():
    """The post-cfg function against eq. 6 of the paper, written out for a flow model (alpha = 1 - sigma)."""
    from types import SimpleNamespace

    from comfy_kernel_core_nodes.model.model_sampling import CONST, ModelSamplingDiscreteFlow, combine
    from comfy_kernel_core_nodes.patches.cfg import temporal_score_rescaling

    sampling = combine(ModelSamplingDiscreteFlow, CONST)
    model = SimpleNamespace(current_patcher=SimpleNamespace(get_model_object=lambda name: sampling))
    g = torch.Generator().manual_seed(0)
    x, denoised = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    sigma = torch.tensor([0.3, 0.3])
    k, s = 0.8, 1.5
    out = temporal_score_rescaling(k, s)({"denoised": denoised, "input": x, "sigma": sigma, "model": model})
    snr = ((1 - 0.3) / 0.3) ** 2
    r = (snr * s * s + 1) / (snr * s * s / k + 1)
    expected = x / 0.7 + r * (denoised - x / 0.7)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # no change at k = 1 and at sigma 0
    assert temporal_score_rescaling(1.0, s)({"denoised": denoised, "input": x, "sigma": sigma, "model": model}) \
        is denoised
    zero = {"denoised": denoised, "input": x, "sigma": torch.zeros(2), "model": model}
    assert temporal_score_rescaling(k, s)(zero) is denoised


def test_model_noise_scale_scales_the_noise(server):
    """AddNoise at sigma 0.5 on an empty latent adds 0.5 * noise_scale * noise (in the model's latent units)."""
    prompt = base()
    prompt["half"] = {"class_type": "ManualSigmas", "inputs": {"sigmas": "0.5, 0.0"}}
    for scale in (0.0, 1.0, 3.0):
        name = f"scaled_{scale:g}"
        prompt[name] = {"class_type": "ModelNoiseScale", "inputs": {"model": ["ma", 0], "noise_scale": scale}}
        prompt[f"{name}_add"] = {"class_type": "AddNoise", "inputs": {
            "model": [name, 0], "noise": ["noise", 0], "sigmas": ["half", 0], "latent_image": ["latent", 0]}}
        prompt[f"{name}_probe"] = {"class_type": "TestProbe", "inputs": {"value": [f"{name}_add", 0], "name": name}}
    prompt["plain_add"] = {"class_type": "AddNoise", "inputs": {
        "model": ["ma", 0], "noise": ["noise", 0], "sigmas": ["half", 0], "latent_image": ["latent", 0]}}
    prompt["plain_probe"] = {"class_type": "TestProbe", "inputs": {"value": ["plain_add", 0], "name": "plain"}}
    out = server.run(prompt)
    zero, one, three = (samples(out, f"scaled_{s}") for s in ("0", "1", "3"))
    np.testing.assert_array_equal(one, samples(out, "plain"))
    assert np.abs(one - zero).max() > 0.1
    np.testing.assert_allclose(three - zero, 3 * (one - zero), rtol=1e-4, atol=1e-5)


def test_model_noise_scale_refuses_a_model_without_flow_sampling():
    from types import SimpleNamespace

    from comfy_kernel_core_nodes.model.model_sampling import EPS, ModelSamplingDiscrete, combine
    from comfy_kernel_core_nodes.nodes.model_advanced import ModelNoiseScale

    sampling = combine(ModelSamplingDiscrete, EPS)
    model = SimpleNamespace(get_model_object=lambda name: sampling)
    with pytest.raises(ValueError, match="rectified-flow"):
        ModelNoiseScale().patch(model, 2.0)


def test_sampler_lcm(server):
    prompt = base()
    prompt["lcm"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "lcm"}}
    settings = {"same": (1.0, 1.0, 0.0), "quiet": (0.0, 0.0, 0.0), "ramp": (2.0, 0.5, 0.0), "clipped": (1.0, 1.0, 0.5)}
    for name, (start, end, clip) in settings.items():
        prompt[f"sampler_{name}"] = {"class_type": "SamplerLCM",
                                     "inputs": {"s_noise": start, "s_noise_end": end, "noise_clip_std": clip}}
        sample(prompt, name, cfg_guider(["ma", 0], 2.0), sampler=[f"sampler_{name}", 0])
    sample(prompt, "select", cfg_guider(["ma", 0], 2.0), sampler=["lcm", 0])
    out = server.run(prompt)
    np.testing.assert_array_equal(samples(out, "same"), samples(out, "select"))
    for name in ("quiet", "ramp", "clipped"):
        assert not np.allclose(samples(out, name), samples(out, "select"), atol=1e-4), name


class _Flow:
    """What sample_lcm reaches through the sampler's model: guider.inner_model.model_sampling."""

    def __init__(self, noise_scale: float) -> None:
        from comfy_kernel_core_nodes.model.model_sampling import CONST, ModelSamplingDiscreteFlow, combine

        sampling = combine(ModelSamplingDiscreteFlow, CONST)
        sampling.set_noise_scale(noise_scale)
        self.inner_model = type("Guider", (), {})()
        self.inner_model.inner_model = type("Base", (), {"model_sampling": sampling})()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x * 0.5  # a fixed "denoiser", so each step's result is known


def test_sample_lcm_noise_schedule_and_clip():
    from comfy_kernel_core_nodes.sampling.samplers_euler import sample_lcm

    g = torch.Generator().manual_seed(3)
    draws = [torch.randn(1, 2, 4, 4, generator=g) * 2 for _ in range(3)]
    sigmas = torch.tensor([1.0, 0.6, 0.3, 0.1])

    def noise_sampler(sigma, sigma_next, calls=iter(draws)):
        return next(calls)

    x0 = torch.ones(1, 2, 4, 4)
    out = sample_lcm(_Flow(noise_scale=2.0), x0, sigmas, noise_sampler=noise_sampler, s_noise=3.0,
                     s_noise_end=1.0, noise_clip_std=0.5)
    x = x0
    for i, s_i in enumerate((3.0, 2.0, 1.0)):
        limit = 0.5 * draws[i].std()
        noise = draws[i].clamp(-limit, limit) * s_i
        sigma = sigmas[i + 1]
        x = sigma * (noise * 2.0) + (1 - sigma) * (x * 0.5)
    torch.testing.assert_close(out, x)


def test_model_attention_backend_accepts_the_kitchen_backend_and_runs_pytorch_attention(server):
    prompt = base()
    for name, backend in (("torch", "pytorch attention"), ("kitchen", "comfy kitchen attention")):
        prompt[name] = {"class_type": "ModelAttentionBackend", "inputs": {"model": ["ma", 0], "attention": backend}}
        sample(prompt, f"s_{name}", cfg_guider([name, 0], 2.0))
    sample(prompt, "plain", cfg_guider(["ma", 0], 2.0))
    out = server.run(prompt)
    np.testing.assert_array_equal(samples(out, "s_torch"), samples(out, "plain"))
    np.testing.assert_array_equal(samples(out, "s_kitchen"), samples(out, "plain"))
