"""Custom sampling nodes (schedulers, sigma operations, samplers, guiders, noise) against ComfyUI 0.3.64.

The graphs of ``_sampling_graphs`` run through a real server on the tiny SD1.5
checkpoint and every probe is compared with what ComfyUI's own node classes
recorded for the same graph (``data/sampling_nodes``). The SamplerCustomAdvanced
test checks the issue's promise: RandomNoise + CFGGuider + KSamplerSelect +
BasicScheduler give exactly KSampler's image.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _sampling_graphs as graphs  # noqa: E402
from _graph_refs import assert_close, check, expected_values, install_checkpoint  # noqa: E402
from _server import png_pixels  # noqa: E402


@pytest.fixture(scope="module")
def server(graph_server, sd15_tiny_checkpoint):
    install_checkpoint(graph_server, sd15_tiny_checkpoint)
    return graph_server


def test_schedulers_and_sigma_nodes_match_comfyui(server):
    recorded = server.run(graphs.sigma_graph())
    values = expected_values()
    names = [n["inputs"]["name"] for n in graphs.sigma_graph().values() if n["class_type"] == "TestProbe"]
    assert sorted(recorded) == sorted(names)
    for name in names:
        if name in values:
            assert math.isclose(recorded[name], values[name], rel_tol=1e-6, abs_tol=1e-7), name
        else:
            assert_close(name, recorded[name], rtol=1e-6)
    # the cases the comparison covers are the ones that matter
    assert recorded["split_denoise_high"].shape == (5,) and recorded["split_denoise_low"].shape == (3,)
    assert recorded["flip"][0] == np.float32(0.0001) and len(recorded["extend_linear"]) > len(recorded["karras"])
    assert recorded["percent_1"] == 999999999.9 and recorded["percent_4"] == 0.0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_custom_sampling_matches_comfyui(server):
    prompt = graphs.custom_sampler_graph()
    recorded = server.run(prompt, timeout=1800)
    names = [n["inputs"]["name"] for n in prompt.values() if n["class_type"] == "TestProbe"]
    assert sorted(recorded) == sorted(names)
    failures = [str(e) for name in names for e in check(name, recorded[name])]
    assert failures == []
    # the LCM upscaler enlarged the latent by 1.5 over two steps
    assert recorded["lcm_upscale"]["samples"].shape == (1, 4, 12, 12)


def _image_prompt(sampler_nodes: dict, latent_link: list, prefix: str) -> dict:
    g = graphs.Graph()
    g.nodes.update(sampler_nodes)
    g.add("decode", "VAEDecode", samples=latent_link, vae=["ckpt", 2])
    g.add("save", "SaveImage", images=["decode", 0], filename_prefix=prefix)
    return g.nodes


@pytest.mark.slow
@pytest.mark.parametrize("sampler,scheduler,steps,cfg,seed", [
    ("euler", "normal", 4, 7.0, 42),
    ("dpmpp_2m_sde", "karras", 5, 5.5, 1234),
])
def test_sampler_custom_advanced_gives_the_ksampler_image(server, sampler, scheduler, steps, cfg, seed):
    ksampler = {"ks": {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
        "scheduler": scheduler, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
        "denoise": 1.0}}}
    custom = {
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                         "negative": ["neg", 0], "cfg": cfg}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": scheduler,
                                                              "steps": steps, "denoise": 1.0}},
        "adv": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["empty", 0]}},
    }
    images = []
    for nodes, link, prefix in ((ksampler, ["ks", 0], f"ks_{sampler}"), (custom, ["adv", 0], f"adv_{sampler}")):
        outputs = server.outputs(_image_prompt(nodes, link, prefix))
        (item,) = outputs["save"]["images"]
        r = server.server.get("/view", params=item)
        assert r.status_code == 200
        images.append(png_pixels(r.content))
    assert images[0].shape == (64, 64, 3)
    assert np.array_equal(images[0], images[1])


def test_manual_sigmas_parses_every_number(server):
    prompt = {
        "a": {"class_type": "ManualSigmas", "inputs": {"sigmas": "1, 0.5"}},
        "b": {"class_type": "ManualSigmas", "inputs": {"sigmas": "14.61,7.0; 3 , .5 -0.25 +2 0"}},
        "pa": {"class_type": "TestProbe", "inputs": {"value": ["a", 0], "name": "a"}},
        "pb": {"class_type": "TestProbe", "inputs": {"value": ["b", 0], "name": "b"}},
    }
    out = server.run(prompt)
    np.testing.assert_array_equal(out["a"], np.float32([1.0, 0.5]))
    np.testing.assert_array_equal(out["b"], np.float32([14.61, 7.0, 3.0, 0.5, -0.25, 2.0, 0.0]))


def test_helper_objects_are_importable_under_comfyui_names():
    import torch

    from comfy_kernel_core_nodes.nodes import custom_sampler
    from comfy_kernel_core_nodes.nodes.custom_sampler import (
        Guider_Basic,
        Guider_DualCFG,
        Noise_EmptyNoise,
        Noise_RandomNoise,
    )
    from comfy_kernel_core_nodes.sampling.guider import CFGGuider
    from comfy_kernel_core_nodes.sampling.noise import prepare_noise

    assert issubclass(Guider_Basic, CFGGuider) and issubclass(Guider_DualCFG, CFGGuider)
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [3, 1]}
    noise = Noise_RandomNoise(9)
    assert noise.seed == 9
    assert torch.equal(noise.generate_noise(latent), prepare_noise(latent["samples"], 9, [3, 1]))
    empty = Noise_EmptyNoise()
    assert empty.seed == 0 and not empty.generate_noise(latent).any()
    with pytest.raises(AttributeError):
        custom_sampler.Guider_Nonexistent  # noqa: B018


def test_sigma_operations_edge_cases():
    import torch

    from comfy_kernel_core_nodes.nodes import custom_sampler as cs

    sigmas = torch.tensor([3.0, 2.0, 1.0, 0.0])
    high, low = cs.SplitSigmasDenoise().get_sigmas(sigmas, 0.0)
    assert high.numel() == 0 and low.tolist() == [0.0]  # ComfyUI's sigmas[:-0]
    high, low = cs.SplitSigmas().get_sigmas(sigmas, 1)
    assert high.tolist() == [3.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    (flipped,) = cs.FlipSigmas().get_sigmas(sigmas)
    assert flipped.tolist() == pytest.approx([0.0001, 1.0, 2.0, 3.0])
    (empty,) = cs.FlipSigmas().get_sigmas(torch.FloatTensor([]))
    assert empty.numel() == 0
    (first,) = cs.SetFirstSigma().set_first_sigma(sigmas, 9.0)
    assert first.tolist() == [9.0, 2.0, 1.0, 0.0] and sigmas[0] == 3.0
    (extended,) = cs.ExtendIntermediateSigmas().extend(sigmas, 2, 2.5, 0.5, "linear")
    assert extended.tolist() == [3.0, 2.0, 1.5, 1.0, 0.5, 0.0]
    latent = {"samples": torch.ones(1, 4, 2, 2)}
    assert cs.AddNoise().add_noise(None, cs.Noise_EmptyNoise(), torch.FloatTensor([]), latent) == (latent,)
