"""HiDream end to end through the server: the hidream_* workflow templates (I1 full/dev/fast, E1 full and
E1.1) and a graph with CLIPTextEncodeHiDream on a DualCLIPLoader ``hidream`` pair.

Random-weight files (see _hidream.py) sit under the names the templates use:
fp8 transformers for I1, bf16 for E1, scaled-fp8 T5 and Llama 3.1, a
Long-CLIP-L (248 positions, with its projection) and CLIP-G, Flux's VAE.
Each graph samples 2 steps at 64x64 (E1: its input image scaled down) and
saves an image.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _flux import t5_state_dict, vae16_state_dict  # noqa: E402
from _hidream import llama_state_dict, transformer_layout, transformer_state_dict  # noqa: E402
from _random_weights import fp8_state_dict, module_shapes, random_state_dict, write  # noqa: E402
from _sd3 import clip_g_file  # noqa: E402
from _templates import template  # noqa: E402
from test_family_flux_server import _saved_images, _shrink  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

TEMPLATES = ("hidream_i1_full", "hidream_i1_dev", "hidream_i1_fast", "hidream_e1_full", "hidream_e1_1")


def long_clip_l(seed: int = 2) -> dict[str, torch.Tensor]:
    """CLIP-L with 248 positions and a text projection beside ``text_model.``, as clip_l_hidream ships."""
    from comfy_kernel_core_nodes.components.clip.text_model import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        net = CLIPTextModel(CLIPTextConfig(max_positions=248, projection=True))
    sd = random_state_dict(module_shapes(net), seed=seed, dtype=torch.float16)
    projection = sd.pop("text_projection.weight")
    return {**{"text_model." + k: v for k, v in sd.items()}, "text_projection.weight": projection}


@pytest.fixture(scope="module")
def files(graph_server):
    models = lambda folder: graph_server.models_dir(folder)  # noqa: E731
    layout = transformer_layout()
    fp8 = fp8_state_dict(transformer_state_dict(layout, seed=3, dtype=torch.bfloat16))
    for name in ("hidream_i1_full_fp8", "hidream_i1_dev_fp8", "hidream_i1_fast_fp8"):
        write(models("diffusion_models") / f"{name}.safetensors", fp8)
    bf16 = transformer_state_dict(layout, seed=4, dtype=torch.bfloat16)
    for name in ("hidream_e1_full_bf16", "hidream_e1_1_bf16"):
        write(models("diffusion_models") / f"{name}.safetensors", bf16)
    os.link(clip_g_file(), models("text_encoders") / "clip_g_hidream.safetensors")  # the cached file, hard-linked
    write(models("text_encoders") / "clip_l_hidream.safetensors", long_clip_l())
    write(models("text_encoders") / "t5xxl_fp8_e4m3fn_scaled.safetensors",
          fp8_state_dict(t5_state_dict(), scaled=True))
    write(models("text_encoders") / "llama_3.1_8b_instruct_fp8_scaled.safetensors",
          fp8_state_dict(llama_state_dict(), scaled=True, skip=lambda key: "embed_tokens" in key))
    write(models("vae") / "ae.safetensors", vae16_state_dict(dtype=torch.float16))
    from PIL import Image

    pixels = (np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)
    for name in ("hidream_e1_full_input_image.jpg", "hidream_e1_1_input_image.jpg"):
        Image.fromarray(pixels).save(graph_server.input_dir / name)
    yield graph_server


@pytest.fixture(autouse=True)
def free_models(files):
    yield
    files.server.post("/free", json={"unload_models": True, "free_memory": True})


def _small_edit_image(prompt: dict) -> dict:
    """E1's input image scaled to about 64x64 instead of 768x768 / 1 megapixel."""
    for node in prompt.values():
        if node["class_type"] == "ImageScale":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "ImageScaleToTotalPixels":
            node["inputs"].update(megapixels=0.01)
    return prompt


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_runs(files, name):
    converted = files.server.post("/api/workflows/convert", json={"workflow": template(name)}).json()
    assert converted["missing_nodes"] == []
    prompt = _small_edit_image(_shrink(converted["prompt"]))
    types = {node["class_type"] for node in prompt.values()}
    assert "QuadrupleCLIPLoader" in types and "UNETLoader" in types
    images = _saved_images(files, files.outputs(prompt, timeout=1500))
    assert len(images) == 1 and images[0].std() > 0
    height, width, _ = images[0].shape
    if name == "hidream_e1_1":  # the input image at 0.01 megapixels, sides multiples of 8
        assert height % 8 == 0 and width % 8 == 0 and 7000 <= height * width <= 13000
    else:
        assert (height, width) == (64, 64)


@pytest.mark.timeout(1800)
def test_separate_prompts_on_a_t5_and_llama_pair(files):
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "hidream_i1_dev_fp8.safetensors",
                                                        "weight_dtype": "default"}},
        "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": 6.0}},
        "clip": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "llama_3.1_8b_instruct_fp8_scaled.safetensors",
            "clip_name2": "t5xxl_fp8_e4m3fn_scaled.safetensors", "type": "hidream"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "pos": {"class_type": "CLIPTextEncodeHiDream", "inputs": {
            "clip": ["clip", 0], "clip_l": "a fox", "clip_g": "a fox", "t5xxl": "a red fox in the snow",
            "llama": "A photograph of a red fox standing in deep snow"}},
        "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["pos", 0]}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["shift", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "lcm", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "hidream"}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["pos", 0], "name": "pos"}},
    }
    recorded, outputs = files.run_with_outputs(prompt, timeout=1500)
    cond = recorded["pos"][0]
    assert cond["shape"] == [1, 128, 256]  # T5's 128 states (the test T5 is 256 wide)
    assert cond["options"]["pooled_output"]["mean"] == 0.0  # no CLIP file: a zero pooled vector
    assert cond["options"]["conditioning_llama3"]["tensor_shape"][:2] == [1, 3]  # one state per Llama layer
    images = _saved_images(files, outputs)
    assert len(images) == 1 and images[0].shape == (64, 64, 3)
