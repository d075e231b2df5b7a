"""Context windows through the server: an SD1.5 batch and a Wan video sampled window by window.

ContextWindowsManual takes current ComfyUI's twelve widgets; the Wan Animate
templates' values are converted from the template file and run on Wan as given
(only the window sizes shrunk to the tiny video).

The tiny SD1.5 checkpoint samples a batch of 8 with ContextWindowsManual
(windows of 4 over the batch) and saves the 8 decoded images; its UNet sees
every image alone, so the latents equal an unwindowed KSampler's. Windows over
the latent's rows (dim 2) do change what the UNet sees, which shows the handler
is in force. The tiny Wan 2.1 model samples 9 frames (3 latent frames) with
WanContextWindowsManual: windows of 5 video frames (2 latent frames) change the
video, windows of 9 or more give exactly the unwindowed latent.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _files_wan import place, transformer_file, umt5_file, vae21_file  # noqa: E402
from _graph_refs import install_checkpoint  # noqa: E402
from _sampling_graphs import CHECKPOINT, Graph  # noqa: E402

from comfy_kernel.convert import convert_workflow  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread"), pytest.mark.timeout(1200)]


OLD_BEHAVIOUR = {"freenoise": False, "cond_retain_index_list": "", "split_conds_to_windows": False,
                 "latent_retain_index_list": "", "causal_window_fix": False}


def _saved(outputs: dict, node_id: str) -> list[dict]:
    return outputs[node_id]["images"]


def _template_windows(graph_server) -> dict:
    """The inputs video_wan_animate2's ContextWindowsManual node converts to, with this server's /object_info."""
    spec = importlib.util.find_spec("comfyui_workflow_templates_core")
    if spec is None:
        pytest.skip("comfyui-workflow-templates is not installed")
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "comfyui_workflow_templates_*",
                                   "**", "video_wan_animate2.json"), recursive=True)
    if not found:
        pytest.skip("video_wan_animate2 is not in this comfyui-workflow-templates")
    object_info = graph_server.server.get("/object_info").json()
    prompt = convert_workflow(json.loads(Path(found[0]).read_text()), object_info).prompt
    (node,) = {json.dumps(n["inputs"], sort_keys=True): n for n in prompt.values()
               if n["class_type"] == "ContextWindowsManual"}.values()
    return {k: v for k, v in node["inputs"].items() if k != "model"}


def test_sd15_batch_of_8_in_windows_of_4(graph_server, sd15_tiny_checkpoint):
    install_checkpoint(graph_server, sd15_tiny_checkpoint)
    assert sd15_tiny_checkpoint.name == CHECKPOINT
    g = Graph()
    batch = g.add("batch", "EmptyLatentImage", width=64, height=64, batch_size=8)
    windows = g.add("windows", "ContextWindowsManual", model=g.model, context_length=4, context_overlap=1,
                    context_schedule="standard_static", context_stride=1, closed_loop=False,
                    fuse_method="pyramid", dim=0, **OLD_BEHAVIOUR)
    rows = g.add("rows", "ContextWindowsManual", model=g.model, context_length=4, context_overlap=2,
                 context_schedule="standard_static", context_stride=1, closed_loop=False, fuse_method="flat", dim=2,
                 **OLD_BEHAVIOUR)
    windowed = g.ksampler("windowed", windows, latent=batch, steps=2)
    g.ksampler("plain", g.model, latent=batch, steps=2)
    g.ksampler("rows", rows, latent=batch, steps=2)
    decoded = g.add("decode", "VAEDecode", samples=windowed, vae=["ckpt", 2])
    g.add("save", "SaveImage", images=decoded, filename_prefix="context_windows")
    g.add("save_latent", "SaveLatent", samples=windowed, filename_prefix="latents/context_windows")
    recorded, outputs = graph_server.run_with_outputs(g.nodes, timeout=1200)
    images = _saved(outputs, "save")
    assert len(images) == 8
    assert all((graph_server.output_dir / i["subfolder"] / i["filename"]).is_file() for i in images)
    assert list((graph_server.output_dir / "latents").glob("context_windows*.latent"))
    out, plain = recorded["windowed"]["samples"], recorded["plain"]["samples"]
    assert out.shape == (8, 4, 8, 8)
    assert np.abs(out - plain).max() <= 1e-5 * np.abs(plain).max()
    by_rows = recorded["rows"]["samples"]
    assert np.isfinite(by_rows).all() and np.abs(by_rows - plain).max() > 1e-2 * np.abs(plain).max()


def _wan_graph(length: int | None, manual: dict | None = None) -> dict:
    nodes: dict = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors",
                                                        "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                        "type": "wan", "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a fox in the snow"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "static"}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo",
                   "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": 1}},
    }
    model = ["unet", 0]
    if manual is not None:
        nodes["windows"] = {"class_type": "ContextWindowsManual", "inputs": {"model": model, **manual}}
        model = ["windows", 0]
    elif length is not None:
        nodes["windows"] = {"class_type": "WanContextWindowsManual", "inputs": {
            "model": model, "context_length": length, "context_overlap": 4, "context_schedule": "standard_static",
            "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid"}}
        model = ["windows", 0]
    nodes["sample"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 5, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    nodes["probe"] = {"class_type": "TestProbe", "inputs": {"value": ["sample", 0], "name": "latent"}}
    nodes["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}}
    nodes["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0],
                                                           "filename_prefix": f"wan_windows_{length}"}}
    nodes["save_latent"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0],
                                                                   "filename_prefix": f"latents/wan_{length}"}}
    return nodes


def test_wan_9_frames_in_context_windows(graph_server):
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(transformer_file("t2v"), graph_server.models_dir("diffusion_models"), "wan2.1_t2v_1.3B_fp16.safetensors")
    results = {}
    for length in (None, 5, 9):
        recorded, outputs = graph_server.run_with_outputs(_wan_graph(length), timeout=1200)
        results[length] = recorded["latent"]["samples"]
        assert len(_saved(outputs, "save")) == 9  # 9 decoded frames saved as images
        assert list((graph_server.output_dir / "latents").glob(f"wan_{length}*.latent"))
    plain = results[None]
    assert plain.shape == (1, 16, 3, 8, 8)
    # 5 video frames = 2 latent frames: windows [0, 1] and [1, 2], fused
    assert np.isfinite(results[5]).all() and not np.allclose(results[5], plain, atol=1e-3)
    # 9 video frames = 3 latent frames: the whole video, evaluated as without the node
    assert np.array_equal(results[9], plain)


def test_wan_with_the_animate_templates_context_windows(graph_server):
    """video_wan_animate2's values (dim 2, FreeNoise, condition index 0 retained, causal anchor frame)."""
    manual = _template_windows(graph_server)
    assert manual == {"context_length": 21, "context_overlap": 8, "context_schedule": "standard_static",
                      "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid", "dim": 2,
                      "freenoise": True, "cond_retain_index_list": "0", "split_conds_to_windows": False,
                      "latent_retain_index_list": "", "causal_window_fix": True}
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(transformer_file("t2v"), graph_server.models_dir("diffusion_models"), "wan2.1_t2v_1.3B_fp16.safetensors")
    results = {}
    for name, settings in (("template", {**manual, "context_length": 2, "context_overlap": 1}),
                           ("old", {**manual, "context_length": 2, "context_overlap": 1, **OLD_BEHAVIOUR})):
        recorded, outputs = graph_server.run_with_outputs(_wan_graph(None, settings), timeout=1200)
        results[name] = recorded["latent"]["samples"]
        assert len(_saved(outputs, "save")) == 9
    assert np.isfinite(results["template"]).all()
    assert not np.allclose(results["template"], results["old"], atol=1e-3)
