"""Qwen-Image, Qwen-Image-Edit and Z-Image through the server, in their ComfyUI workflow shapes.

Random-weight files (see _files_qwen.py) sit in the model folders under the
names the workflow templates use (the VAE at a sixth of its width, which the
loader reads from the file); each graph samples 2 steps at 64x64 and
saves an image (or records the latent). Models are freed between graphs so
the server never holds more than one family.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _files_qwen import place, qwen3_4b, qwen25_vl_fp8_scaled, qwen_image_fp8, wan21_vae_narrow, z_image_bf16
from _flux import vae16_state_dict
from _random_weights import write
from _templates import template
from PIL import Image

pytestmark = pytest.mark.slow

QWEN_UNET = "qwen_image_2512_fp8_e4m3fn.safetensors"
QWEN_TE = "qwen_2.5_vl_7b_fp8_scaled.safetensors"
QWEN_VAE = "qwen_image_vae.safetensors"
Z_UNET = "z_image_turbo_bf16.safetensors"
Z_TE = "qwen_3_4b.safetensors"
QWEN_LORA = "Wuli-Qwen-Image-2512-Turbo-LoRA-2steps-V1.0-bf16.safetensors"
DEFAULT_GRAPH = Path(__file__).parent / "data" / "workflows" / "z_image_turbo_default_ui.json"


def qwen_lora(rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA on the first block's projections, named as Qwen-Image-Lightning names them (bare diffusers
    names, ``lora_down``/``lora_up`` with ``alpha``)."""
    g = torch.Generator().manual_seed(11)
    out = {}
    for layer in ("attn.to_q", "attn.to_k", "attn.add_v_proj", "img_mlp.net.2"):
        key = f"transformer_blocks.0.{layer}"
        width_in = 12288 if layer.endswith("net.2") else 3072
        out[f"{key}.lora_down.weight"] = (torch.randn(rank, width_in, generator=g) * 0.01).to(torch.bfloat16)
        out[f"{key}.lora_up.weight"] = (torch.randn(3072, rank, generator=g) * 0.01).to(torch.bfloat16)
        out[f"{key}.alpha"] = torch.tensor(float(rank), dtype=torch.bfloat16)
    return out


@pytest.fixture(scope="module")
def server(graph_server):
    place(qwen_image_fp8(), graph_server.models_dir("diffusion_models"), QWEN_UNET)
    place(qwen25_vl_fp8_scaled(), graph_server.models_dir("text_encoders"), QWEN_TE)
    place(wan21_vae_narrow(), graph_server.models_dir("vae"), QWEN_VAE)
    place(z_image_bf16(), graph_server.models_dir("diffusion_models"), Z_UNET)
    place(qwen3_4b(), graph_server.models_dir("text_encoders"), Z_TE)
    write(graph_server.models_dir("vae") / "ae.safetensors", vae16_state_dict(dtype=torch.float16))
    write(graph_server.models_dir("loras") / QWEN_LORA, qwen_lora())
    yield graph_server


@pytest.fixture(autouse=True)
def free_models(server):
    yield
    server.server.post("/free", json={"unload_models": True, "free_memory": True})


def _sampler(model, positive, negative, latent, sampler="euler", cfg=2.5) -> dict:
    return {"class_type": "KSampler", "inputs": {
        "model": model, "positive": positive, "negative": negative, "latent_image": latent, "seed": 7,
        "steps": 2, "cfg": cfg, "sampler_name": sampler, "scheduler": "simple", "denoise": 1.0}}


def _saved(server, outputs: dict, node: str) -> Image.Image:
    image = outputs[node]["images"][0]
    return Image.open(server.output_dir / image.get("subfolder", "") / image["filename"])


@pytest.mark.timeout(1800)
def test_qwen_image_text_to_image(server):
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": QWEN_UNET, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": QWEN_TE, "type": "qwen_image", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": QWEN_VAE}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a lighthouse at dusk"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blurry"}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": _sampler(["1", 0], ["4", 0], ["5", 0], ["6", 0]),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "qwen"}},
        "10": {"class_type": "TestProbe", "inputs": {"value": ["7", 0], "name": "latent"}},
        "11": {"class_type": "TestProbe", "inputs": {"value": ["4", 0], "name": "cond"}},
    }
    entry = server.wait(server.queue(prompt), timeout=1800)
    recorded = {item["name"]: item for out in entry["outputs"].values() for item in out.get("probe", [])}
    latent = np.load(server.output_dir / "probes" / recorded["latent"]["tensors"])["samples"]
    assert latent.shape == (1, 16, 1, 8, 8) and np.isfinite(latent).all()  # Wan 2.1 latents are 5-d
    assert recorded["cond"]["value"][0]["shape"][2] == 3584
    image = _saved(server, entry["outputs"], "9")
    assert image.size == (64, 64)


@pytest.mark.timeout(1800)
def test_qwen_image_edit(server):
    """Both Edit encoders with their VAE (reference latents at about 1 megapixel, as ComfyUI scales them);
    the sampled graph takes its reference from the small image through ReferenceLatent to stay quick."""
    Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)).save(
        server.input_dir / "edit_input.png")
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": QWEN_UNET, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": QWEN_TE, "type": "qwen_image", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": QWEN_VAE}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "edit_input.png"}},
        "5": {"class_type": "ImageScale", "inputs": {"image": ["4", 0], "upscale_method": "area", "width": 64,
                                                    "height": 48, "crop": "disabled"}},
        "6": {"class_type": "TextEncodeQwenImageEdit", "inputs": {"clip": ["2", 0], "prompt": "make it night",
                                                                 "vae": ["3", 0], "image": ["5", 0]}},
        "7": {"class_type": "TextEncodeQwenImageEditPlus", "inputs": {"clip": ["2", 0], "prompt": "",
                                                                     "vae": ["3", 0], "image1": ["5", 0]}},
        "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["5", 0], "vae": ["3", 0]}},
        "14": {"class_type": "TextEncodeQwenImageEditPlus", "inputs": {"clip": ["2", 0], "prompt": "make it night",
                                                                      "image1": ["5", 0]}},
        "15": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["14", 0], "latent": ["8", 0]}},
        "16": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["14", 0]}},
        "9": _sampler(["1", 0], ["15", 0], ["16", 0], ["8", 0]),
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["3", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "qwen_edit"}},
        "12": {"class_type": "TestProbe", "inputs": {"value": ["6", 0], "name": "edit_cond"}},
        "13": {"class_type": "TestProbe", "inputs": {"value": ["7", 0], "name": "plus_cond"}},
    }
    entry = server.wait(server.queue(prompt), timeout=1800)
    recorded = {item["name"]: item["value"] for out in entry["outputs"].values() for item in out.get("probe", [])}
    for name in ("edit_cond", "plus_cond"):
        options = recorded[name][0]["options"]
        assert "reference_latents" in options, options
    assert _saved(server, entry["outputs"], "11").size == (64, 48)


@pytest.mark.timeout(1800)
def test_z_image_lumina2_nodes(server):
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": Z_UNET, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": Z_TE, "type": "lumina2", "device": "default"}},
        "3": {"class_type": "CLIPTextEncodeLumina2", "inputs": {"system_prompt": "superior",
                                                               "user_prompt": "a fox", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": ""}},
        "5": {"class_type": "RenormCFG", "inputs": {"model": ["1", 0], "cfg_trunc": 100, "renorm_cfg": 1.0}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": _sampler(["5", 0], ["3", 0], ["4", 0], ["6", 0], sampler="res_multistep", cfg=4.0),
        "8": {"class_type": "TestProbe", "inputs": {"value": ["7", 0], "name": "latent"}},
    }
    entry = server.wait(server.queue(prompt), timeout=1800)
    recorded = {item["name"]: item for out in entry["outputs"].values() for item in out.get("probe", [])}
    latent = np.load(server.output_dir / "probes" / recorded["latent"]["tensors"])["samples"]
    assert latent.shape == (1, 16, 8, 8) and np.isfinite(latent).all()


def _converted(server, workflow: dict) -> dict:
    """The API prompt of a UI workflow (the server's converter), shrunk to 64x64 and 2 steps."""
    r = server.server.post("/api/workflows/convert", json={"workflow": workflow})
    assert r.status_code == 200, r.text
    converted = r.json()
    assert converted["missing_nodes"] == []
    prompt = converted["prompt"]
    for node in prompt.values():
        if node["class_type"] in ("EmptySD3LatentImage", "EmptyLatentImage"):
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    return prompt


def _loaders(prompt: dict) -> dict:
    return {n["class_type"]: n["inputs"] for n in prompt.values() if "Loader" in n["class_type"]}


def _images(server, entry: dict) -> list[Image.Image]:
    return [Image.open(server.output_dir / item.get("subfolder", "") / item["filename"])
            for out in entry["outputs"].values() for item in out.get("images", [])]


def _frontend_bundle_text() -> str | None:
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None:
        return None
    assets = Path(spec.origin).parent / "static" / "assets"
    for path in assets.glob("workflowStore-*.js"):
        return path.read_text(errors="replace")
    return None


@pytest.mark.timeout(1800)
def test_frontend_default_graph_runs(server):
    """The graph the web frontend opens by default (Z-Image-Turbo) validates and runs under its file names."""
    workflow = json.loads(DEFAULT_GRAPH.read_text())
    bundle = _frontend_bundle_text()
    if bundle is not None:  # the stored copy is still the installed frontend's default graph
        for node in workflow["nodes"]:
            for value in node.get("widgets_values") or []:
                if isinstance(value, str) and value.endswith(".safetensors"):
                    assert f"`{value}`" in bundle, value
    prompt = _converted(server, workflow)
    loaders = _loaders(prompt)
    assert loaders["CLIPLoader"] == {"clip_name": Z_TE, "type": "lumina2", "device": "default"}
    assert loaders["UNETLoader"] == {"unet_name": Z_UNET, "weight_dtype": "default"}
    assert loaders["VAELoader"] == {"vae_name": "ae.safetensors"}
    sampler = next(n["inputs"] for n in prompt.values() if n["class_type"] == "KSampler")
    assert sampler["sampler_name"] == "res_multistep" and sampler["cfg"] == 1
    entry = server.wait(server.queue(prompt), timeout=1800)
    images = _images(server, entry)
    assert len(images) == 1 and images[0].size == (64, 64)
    pixels = np.asarray(images[0])
    assert pixels.std() > 0  # the decoded random-weight latent is not a flat fill


@pytest.mark.timeout(1800)
def test_z_image_turbo_template_runs(server):
    prompt = _converted(server, template("image_z_image_turbo"))
    assert {n["class_type"] for n in prompt.values()} >= {"ConditioningZeroOut", "ModelSamplingAuraFlow",
                                                          "EmptySD3LatentImage"}
    images = _images(server, server.wait(server.queue(prompt), timeout=1800))
    assert len(images) == 1 and images[0].size == (64, 64)


@pytest.mark.timeout(1800)
def test_qwen_image_template_runs(server):
    """Qwen-Image 2512 with its 2-step LoRA: fp8 transformer, scaled-fp8 Qwen2.5-VL, Wan 2.1 VAE."""
    prompt = _converted(server, template("image_qwen_image_2512_with_2steps_lora"))
    loaders = _loaders(prompt)
    assert loaders["CLIPLoader"]["type"] == "qwen_image"
    assert loaders["UNETLoader"]["unet_name"] == QWEN_UNET
    assert loaders["LoraLoaderModelOnly"]["lora_name"] == QWEN_LORA
    images = _images(server, server.wait(server.queue(prompt), timeout=1800))
    assert len(images) == 1 and images[0].size == (64, 64)
