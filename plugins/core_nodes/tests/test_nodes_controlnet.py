"""The ControlNet nodes through the server: loaders, apply nodes, union type, step ranges, on the tiny checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _control_files import control_lora_sd, controlnet_sd, t2i_adapter_sd, to_diffusers, write_controlnet  # noqa: E402
from _random_weights import link, write  # noqa: E402

pytestmark = pytest.mark.slow


def link_checkpoint(graph_server, checkpoint: Path) -> str:
    return link(checkpoint, graph_server.models_dir("checkpoints") / "tiny.safetensors").name


@pytest.fixture(scope="module")
def setup(graph_server, sd15_tiny_checkpoint):
    link_checkpoint(graph_server, sd15_tiny_checkpoint)
    folder = graph_server.models_dir("controlnet")
    write_controlnet(folder / "zero.safetensors", zero=True, prefix="control_model.")
    write_controlnet(folder / "rand.safetensors", seed=1)
    write(folder / "union.safetensors", to_diffusers(controlnet_sd(seed=2, union_types=8), union=True))
    write(folder / "clora.safetensors", control_lora_sd(seed=3))
    write(folder / "t2i.safetensors", t2i_adapter_sd(seed=5))
    sd = controlnet_sd(seed=1)
    write(folder / "diff.safetensors", {"difference": torch.tensor([]),
                                        **{"control_model." + k: v for k, v in sd.items()}})
    probes = graph_server.input_dir / "probes"
    probes.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(probes / "hint.npy", rng.random((1, 64, 64, 3), dtype=np.float32))
    np.save(probes / "mask.npy", (rng.random((1, 64, 64)) > 0.5).astype(np.float32))
    return graph_server


def base_graph(sampler: str = "KSampler", **sampler_inputs) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red house"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "hint": {"class_type": "TestLoad", "inputs": {"name": "hint.npy"}},
    }


def ksampler(positive, negative, name: str, steps: int = 3) -> dict:
    return {
        f"ks_{name}": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 7, "steps": steps, "cfg": 4.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": positive, "negative": negative, "latent_image": ["lat", 0],
            "denoise": 1.0}},
        f"probe_{name}": {"class_type": "TestProbe", "inputs": {"value": [f"ks_{name}", 0], "name": name}},
    }


def apply(name: str, control, strength: float = 1.0, start: float = 0.0, end: float = 1.0, vae: bool = False) -> dict:
    inputs = {"positive": ["pos", 0], "negative": ["neg", 0], "control_net": control, "image": ["hint", 0],
              "strength": strength, "start_percent": start, "end_percent": end}
    if vae:
        inputs["vae"] = ["ckpt", 2]
    return {f"apply_{name}": {"class_type": "ControlNetApplyAdvanced", "inputs": inputs}}


def test_controlnet_nodes_through_the_server(setup):
    graph = base_graph()
    graph.update(ksampler(["pos", 0], ["neg", 0], "plain"))
    for name in ("zero", "rand", "union", "clora", "t2i"):
        graph[f"load_{name}"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": f"{name}.safetensors"}}
    graph["diff"] = {"class_type": "DiffControlNetLoader", "inputs": {"model": ["ckpt", 0],
                                                                       "control_net_name": "diff.safetensors"}}
    graph["union_type"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["load_union", 0],
                                                                               "type": "depth"}}
    for name, source in (("zero", "load_zero"), ("rand", "load_rand"), ("union", "union_type"),
                         ("clora", "load_clora"), ("t2i", "load_t2i"), ("diff", "diff")):
        graph.update(apply(name, [source, 0], vae=name == "zero"))
        graph.update(ksampler([f"apply_{name}", 0], [f"apply_{name}", 1], name))
    graph["old"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": ["pos", 0],
                                                                 "control_net": ["load_rand", 0],
                                                                 "image": ["hint", 0], "strength": 1.0}}
    graph.update(ksampler(["old", 0], ["neg", 0], "old"))
    graph["mask"] = {"class_type": "TestLoad", "inputs": {"name": "mask.npy"}}
    graph["alimama"] = {"class_type": "ControlNetInpaintingAliMamaApply", "inputs": {
        "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["load_rand", 0], "vae": ["ckpt", 2],
        "image": ["hint", 0], "mask": ["mask", 0], "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    graph.update(ksampler(["alimama", 0], ["alimama", 1], "alimama"))
    graph["cond_probe"] = {"class_type": "TestProbe", "inputs": {"value": ["apply_rand", 0], "name": "cond"}}
    out = setup.run(graph, timeout=900)
    plain = out["plain"]["samples"]
    assert np.array_equal(out["zero"]["samples"], plain)  # zero output convs add exact zeros
    for name in ("rand", "union", "clora", "old", "alimama"):
        assert np.abs(out[name]["samples"] - plain).max() > 1e-3, name
    # the diff ControlNet is the random one stored as a difference to the UNet, plus the UNet: another network
    assert np.abs(out["diff"]["samples"] - out["rand"]["samples"]).max() > 1e-3
    # the old node sets the ControlNet on the positive only, and the sampler gives the negative the same one
    assert np.array_equal(out["old"]["samples"], out["rand"]["samples"])
    # the tiny UNet has no block where a T2I-Adapter's SD1.5 features fit: nothing is added (as in ComfyUI)
    assert np.array_equal(out["t2i"]["samples"], plain)
    options = out["cond"][0]["options"]
    assert options["control_apply_to_uncond"] is False and "ControlNet" in options["control"]


def test_a_controlnet_acts_only_in_its_step_range(setup):
    """With a range of (0.5, 1.0), the first half of the steps is exactly the uncontrolled one."""

    def advanced(positive, negative, name, end_at):
        return {
            f"ks_{name}": {"class_type": "KSamplerAdvanced", "inputs": {
                "model": ["ckpt", 0], "add_noise": "enable", "noise_seed": 3, "steps": 6, "cfg": 4.0,
                "sampler_name": "euler", "scheduler": "normal", "positive": positive, "negative": negative,
                "latent_image": ["lat", 0], "start_at_step": 0, "end_at_step": end_at,
                "return_with_leftover_noise": "enable"}},
            f"probe_{name}": {"class_type": "TestProbe", "inputs": {"value": [f"ks_{name}", 0], "name": name}},
        }

    graph = base_graph()
    graph["load"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "rand.safetensors"}}
    graph.update(apply("late", ["load", 0], start=0.5, end=1.0))
    graph.update(apply("early", ["load", 0], start=0.0, end=0.5))
    graph.update(advanced(["pos", 0], ["neg", 0], "plain_half", 3))
    graph.update(advanced(["apply_late", 0], ["apply_late", 1], "late_half", 3))
    graph.update(advanced(["apply_early", 0], ["apply_early", 1], "early_half", 3))
    graph.update(advanced(["pos", 0], ["neg", 0], "plain_all", 6))
    graph.update(advanced(["apply_late", 0], ["apply_late", 1], "late_all", 6))
    out = setup.run(graph, timeout=900)
    assert np.array_equal(out["late_half"]["samples"], out["plain_half"]["samples"])
    assert np.abs(out["early_half"]["samples"] - out["plain_half"]["samples"]).max() > 1e-3
    assert np.abs(out["late_all"]["samples"] - out["plain_all"]["samples"]).max() > 1e-3


def test_controlnet_text_of_its_own(setup):
    """CLIPTextEncodeControlnet: the ControlNet reads its own prompt; the same prompt changes nothing.

    (Up to rounding: an entry with a ControlNet text of its own is not batched with the negative.)"""
    graph = base_graph()
    graph["load"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "rand.safetensors"}}
    for name, text in (("same", "a red house"), ("other", "a blue boat at night")):
        graph[f"cn_text_{name}"] = {"class_type": "CLIPTextEncodeControlnet", "inputs": {
            "clip": ["ckpt", 1], "conditioning": ["pos", 0], "text": text}}
        graph[f"apply_{name}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": [f"cn_text_{name}", 0], "negative": ["neg", 0], "control_net": ["load", 0],
            "image": ["hint", 0], "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
        graph.update(ksampler([f"apply_{name}", 0], [f"apply_{name}", 1], name))
    graph.update(apply("plain_cn", ["load", 0]))
    graph.update(ksampler(["apply_plain_cn", 0], ["apply_plain_cn", 1], "plain_cn"))
    graph["cond_probe"] = {"class_type": "TestProbe", "inputs": {"value": ["cn_text_other", 0], "name": "cond"}}
    out = setup.run(graph, timeout=900)
    same = np.abs(out["same"]["samples"] - out["plain_cn"]["samples"]).max()
    other = np.abs(out["other"]["samples"] - out["plain_cn"]["samples"]).max()
    assert same < 1e-2 and other > 100 * same, (same, other)
    options = out["cond"][0]["options"]
    assert "cross_attn_controlnet" in options and "pooled_output_controlnet" in options
