"""CLIP vision, style, unCLIP, GLIGEN and the image-conditioning nodes through the server."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _random_weights import write  # noqa: E402
from _vision_files import gligen_sd, link, style_model_sd, unclip_file, vit_l_file  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(graph_server, sd15_tiny_checkpoint):
    vit = vit_l_file()
    unclip = unclip_file(sd15_tiny_checkpoint)
    link(sd15_tiny_checkpoint, graph_server.models_dir("checkpoints") / "tiny.safetensors")
    link(unclip, graph_server.models_dir("checkpoints") / "unclip.safetensors")
    link(vit, graph_server.models_dir("clip_vision") / "vit_l.safetensors")
    write(graph_server.models_dir("style_models") / "style.safetensors", style_model_sd())
    write(graph_server.models_dir("gligen") / "gligen.safetensors", gligen_sd())
    probes = graph_server.input_dir / "probes"
    probes.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    np.save(probes / "image.npy", rng.random((1, 60, 44, 3), dtype=np.float32))
    np.save(probes / "mask.npy", (rng.random((1, 60, 44)) > 0.5).astype(np.float32))
    return graph_server


def _sampler(model, positive, negative, name: str, latent=("lat", 0)) -> dict:
    return {
        f"ks_{name}": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 5, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": positive, "negative": negative, "latent_image": list(latent), "denoise": 1.0}},
        f"probe_{name}": {"class_type": "TestProbe", "inputs": {"value": [f"ks_{name}", 0], "name": name}},
    }


def _probe(node: str, index: int, name: str) -> dict:
    return {f"probe_{name}": {"class_type": "TestProbe", "inputs": {"value": [node, index], "name": name}}}


def test_vision_style_and_gligen_nodes(server):
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a garden"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "image": {"class_type": "TestLoad", "inputs": {"name": "image.npy"}},
        "vision": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit_l.safetensors"}},
        "encode": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["vision", 0], "image": ["image", 0],
                                                                "crop": "center"}},
        "style": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "style.safetensors"}},
        "styled": {"class_type": "StyleModelApply", "inputs": {
            "conditioning": ["pos", 0], "style_model": ["style", 0], "clip_vision_output": ["encode", 0],
            "strength": 0.5, "strength_type": "attn_bias"}},
        "unclip_cond": {"class_type": "unCLIPConditioning", "inputs": {
            "conditioning": ["pos", 0], "clip_vision_output": ["encode", 0], "strength": 0.7,
            "noise_augmentation": 0.1}},
        "gligen": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": "gligen.safetensors"}},
        "boxed": {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": ["pos", 0], "clip": ["ckpt", 1], "gligen_textbox_model": ["gligen", 0],
            "text": "a dog", "width": 32, "height": 24, "x": 8, "y": 16}},
    }
    graph.update(_probe("styled", 0, "styled"))
    graph.update(_probe("unclip_cond", 0, "unclip_cond"))
    graph.update(_probe("boxed", 0, "boxed"))
    graph.update(_sampler(["ckpt", 0], ["pos", 0], ["neg", 0], "plain"))
    graph.update(_sampler(["ckpt", 0], ["styled", 0], ["neg", 0], "styled_run"))
    graph.update(_sampler(["ckpt", 0], ["boxed", 0], ["neg", 0], "boxed_run"))
    out = server.run(graph, timeout=1200)
    (styled,) = out["styled"]
    assert styled["shape"] == [1, 77 + 8, 768]
    assert styled["options"]["attention_mask"]["tensor_shape"] == [1, 77 + 8 + 1, 77 + 8 + 1]
    assert "unclip_conditioning" in out["unclip_cond"][0]["options"]
    gligen = out["boxed"][0]["options"]["gligen"]
    assert gligen.startswith("['position', <ModelPatcher GligenModel") and gligen.endswith(", 3, 4, 2, 1)]]")
    plain = out["plain"]["samples"]
    assert np.abs(out["styled_run"]["samples"] - plain).max() > 1e-3
    assert np.abs(out["boxed_run"]["samples"] - plain).max() > 1e-3


def test_unclip_checkpoint_and_conditioning(server):
    graph = {
        "ckpt": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": "unclip.safetensors"}},
        "image": {"class_type": "TestLoad", "inputs": {"name": "image.npy"}},
        "encode": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["ckpt", 3], "image": ["image", 0],
                                                                "crop": "none"}},
        "text": {"class_type": "TestConditioning", "inputs": {"value": 0.1, "tokens": 77, "width": 1024}},
        "zero": {"class_type": "TestConditioning", "inputs": {"value": 0.0, "tokens": 77, "width": 1024}},
        "unclip": {"class_type": "unCLIPConditioning", "inputs": {
            "conditioning": ["text", 0], "clip_vision_output": ["encode", 0], "strength": 1.0,
            "noise_augmentation": 0.2}},
        "unclip_off": {"class_type": "unCLIPConditioning", "inputs": {
            "conditioning": ["text", 0], "clip_vision_output": ["encode", 0], "strength": 0.0,
            "noise_augmentation": 0.2}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    graph.update(_probe("ckpt", 0, "model"))
    graph.update(_sampler(["ckpt", 0], ["text", 0], ["zero", 0], "plain"))
    graph.update(_sampler(["ckpt", 0], ["unclip", 0], ["zero", 0], "unclip_run"))
    graph.update(_sampler(["ckpt", 0], ["unclip_off", 0], ["zero", 0], "off"))
    out = server.run(graph, timeout=1200)
    assert "SD21UNCLIPModel" in out["model"]
    assert np.array_equal(out["off"]["samples"], out["plain"]["samples"])
    assert np.abs(out["unclip_run"]["samples"] - out["plain"]["samples"]).max() > 1e-3


def test_image_conditioning_nodes(server):
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "pos": {"class_type": "TestConditioning", "inputs": {"value": 0.5, "tokens": 77}},
        "neg": {"class_type": "TestConditioning", "inputs": {"value": 0.0, "tokens": 77}},
        "image": {"class_type": "TestLoad", "inputs": {"name": "image.npy"}},
        "mask": {"class_type": "TestLoad", "inputs": {"name": "mask.npy"}},
        "inpaint": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": ["image", 0],
            "mask": ["mask", 0], "noise_mask": True}},
        "ip2p": {"class_type": "InstructPixToPixConditioning", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": ["image", 0]}},
        "x4": {"class_type": "SD_4XUpscale_Conditioning", "inputs": {
            "images": ["image", 0], "positive": ["pos", 0], "negative": ["neg", 0], "scale_ratio": 2.0,
            "noise_augmentation": 0.25}},
    }
    for node in ("inpaint", "ip2p", "x4"):
        graph.update(_probe(node, 0, f"{node}_pos"))
        graph.update(_probe(node, 1, f"{node}_neg"))
        graph.update(_probe(node, 2, f"{node}_latent"))
    graph.update(_sampler(["ckpt", 0], ["inpaint", 0], ["inpaint", 1], "inpaint_run", latent=("inpaint", 2)))
    out = server.run(graph, timeout=1200)
    options = out["inpaint_pos"][0]["options"]
    assert options["concat_latent_image"]["tensor_shape"] == [1, 4, 7, 5]
    assert options["concat_mask"]["tensor_shape"] == [1, 1, 56, 40]
    assert out["inpaint_latent"]["samples"].shape == (1, 4, 7, 5)
    assert out["inpaint_latent"]["noise_mask"].shape == (1, 1, 56, 40)
    assert out["inpaint_neg"][0]["options"]["concat_mask"] == options["concat_mask"]
    assert out["ip2p_pos"][0]["options"]["concat_latent_image"]["tensor_shape"] == [1, 4, 7, 5]
    assert not out["ip2p_latent"]["samples"].any()
    x4 = out["x4_pos"][0]["options"]
    assert x4["concat_image"]["tensor_shape"] == [1, 3, 30, 22] and x4["noise_augmentation"] == 0.25
    assert out["x4_latent"]["samples"].shape == (1, 4, 30, 22)
    assert out["inpaint_run"]["samples"].shape == (1, 4, 7, 5)
