"""The model-patch templates through the server: converted from their UI format and run at a tiny size.

Random-weight files sit under the templates' names: the Qwen-Image files of
_files_qwen.py with a one-block DiffSynth canny ControlNet; for USO a Flux.1
dev fp8 checkpoint (the small transformer of _flux.py), the full-size SigLIP
(detection needs it), USO's projector and a small LoRA; for Z-Image the
one-layer transformer with a fun ControlNet of one control layer and one
refiner block (2.x layout). Every sampler runs 2
steps; images are scaled to about 0.01 megapixels, empty latents to 64x64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _files_hunyuan_video15 import siglip_file
from _files_model_patch import blockwise_controlnet_sd, uso_projector_sd, z_image_fun_controlnet_file
from _files_qwen import place, qwen3_4b, qwen25_vl_fp8_scaled, qwen_image_fp8, wan21_vae_narrow, z_image_bf16
from _flux import (
    HIDDEN,
    clip_l_state_dict,
    flux_params,
    flux_state_dict,
    prefixed,
    t5_state_dict,
    vae16_state_dict,
)
from _random_weights import write
from _templates import template
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def _convert(server, workflow: dict) -> dict:
    r = server.server.post("/api/workflows/convert", json={"workflow": workflow})
    assert r.status_code == 200, r.text
    converted = r.json()
    assert converted["missing_nodes"] == []
    prompt = converted["prompt"]
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind in ("EmptySD3LatentImage", "EmptyLatentImage"):
            inputs.update({k: 64 for k in ("width", "height") if not isinstance(inputs[k], list)})
        elif kind == "KSampler":
            inputs.update(steps=2, seed=7)
        elif kind == "ImageScaleToTotalPixels":
            inputs["megapixels"] = 0.01
        elif kind == "ImageScaleToMaxDimension":
            inputs["largest_size"] = 64
    return prompt


def _images(server, entry: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(server.output_dir / item.get("subfolder", "") / item["filename"]))
            for out in entry["outputs"].values() for item in out.get("images", []) if item.get("type") == "output"]


def _input_image(server, name: str, size: tuple[int, int] = (96, 112)) -> None:
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(server.input_dir / name)


@pytest.mark.timeout(1800)
def test_qwen_image_controlnet_patch_template(graph_server):
    """image_qwen_image_controlnet_patch: Canny of the input image, VAE-encoded, through the DiffSynth
    ControlNet (ModelPatchLoader + QwenImageDiffsynthControlnet); at strength 0 the image is the plain model's."""
    place(qwen_image_fp8(), graph_server.models_dir("diffusion_models"), "qwen_image_fp8_e4m3fn.safetensors")
    place(qwen25_vl_fp8_scaled(), graph_server.models_dir("text_encoders"), "qwen_2.5_vl_7b_fp8_scaled.safetensors")
    place(wan21_vae_narrow(), graph_server.models_dir("vae"), "qwen_image_vae.safetensors")
    write(graph_server.models_dir("model_patches") / "qwen_image_canny_diffsynth_controlnet.safetensors",
          blockwise_controlnet_sd(3072, 1, dtype=torch.bfloat16))
    _input_image(graph_server, "image_qwen_image_controlnet_patch_input_image.png")
    prompt = _convert(graph_server, template("image_qwen_image_controlnet_patch"))
    kinds = {n["class_type"] for n in prompt.values()}
    assert {"ModelPatchLoader", "QwenImageDiffsynthControlnet", "Canny", "VAEEncode"} <= kinds
    (control,) = [n for n in prompt.values() if n["class_type"] == "QwenImageDiffsynthControlnet"]
    assert control["inputs"]["strength"] == 1
    try:
        (controlled,) = _images(graph_server, graph_server.wait(graph_server.queue(prompt), timeout=1800))
        control["inputs"]["strength"] = 0.0
        (plain,) = _images(graph_server, graph_server.wait(graph_server.queue(prompt), timeout=1800))
    finally:
        graph_server.server.post("/free", json={"unload_models": True, "free_memory": True})
    assert controlled.shape == plain.shape == (88, 104, 3)  # 96x112 at 0.01 MP, cut to multiples of 8
    assert np.abs(controlled.astype(int) - plain.astype(int)).mean() > 0.5


def _enable_bypassed(workflow: dict) -> dict:
    """Turn on every bypassed node (the style-reference subgraphs and their image loaders and saver)."""
    for nodes in [workflow["nodes"]] + [sg["nodes"] for sg in workflow.get("definitions", {}).get("subgraphs", [])]:
        for node in nodes:
            if node.get("mode") == 4:
                node["mode"] = 0
    return workflow


def _uso_lora() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(13)
    key = "diffusion_model.double_blocks.0.img_attn.proj"
    return {f"{key}.lora_A.weight": (torch.randn(4, HIDDEN, generator=g) * 0.05).to(torch.bfloat16),
            f"{key}.lora_B.weight": (torch.randn(HIDDEN, 4, generator=g) * 0.05).to(torch.bfloat16)}


@pytest.mark.timeout(1800)
def test_flux_uso_reference_template(graph_server):
    """flux1_dev_uso_reference_image_gen with its style-reference parts turned on: SigLIP (CLIPVisionEncode),
    USO's projector (ModelPatchLoader + USOStyleReference, twice per graph), the USO LoRA, ReferenceLatent with
    the uxo/uno method; both the character and the style graph save an image."""
    fp8 = torch.float8_e4m3fn
    checkpoint = {**prefixed(flux_state_dict(flux_params(), seed=2, dtype=fp8), "model.diffusion_model."),
                  **prefixed(clip_l_state_dict(), "text_encoders.clip_l.transformer.text_model."),
                  **prefixed(t5_state_dict(dtype=fp8), "text_encoders.t5xxl.transformer."),
                  **prefixed(vae16_state_dict(dtype=torch.float16), "vae.")}
    write(graph_server.models_dir("checkpoints") / "flux1-dev-fp8.safetensors", checkpoint)
    place(siglip_file(), graph_server.models_dir("clip_vision"), "sigclip_vision_patch14_384.safetensors")
    write(graph_server.models_dir("model_patches") / "uso-flux1-projector-v1.safetensors", uso_projector_sd(HIDDEN))
    write(graph_server.models_dir("loras") / "uso-flux1-dit-lora-v1.safetensors", _uso_lora())
    _input_image(graph_server, "flux1_dev_uso_reference_image_gen_input_image.png")
    prompt = _convert(graph_server, _enable_bypassed(template("flux1_dev_uso_reference_image_gen")))
    kinds = [n["class_type"] for n in prompt.values()]
    assert kinds.count("USOStyleReference") >= 2 and kinds.count("KSampler") == 2
    assert {"ModelPatchLoader", "CLIPVisionLoader", "CLIPVisionEncode", "LoraLoaderModelOnly", "ReferenceLatent",
            "FluxKontextMultiReferenceLatentMethod"} <= set(kinds)
    try:
        images = _images(graph_server, graph_server.wait(graph_server.queue(prompt), timeout=1800))
    finally:
        graph_server.server.post("/free", json={"unload_models": True, "free_memory": True})
    assert len(images) == 2 and all(image.shape == (64, 64, 3) and image.std() > 0 for image in images)


@pytest.mark.timeout(1800)
def test_z_image_turbo_fun_union_controlnet_template(graph_server):
    """image_z_image_turbo_fun_union_controlnet: the subgraph's Z-Image-Turbo with the fun union ControlNet
    (2.x layout) applied by QwenImageDiffsynthControlnet to the Canny image; the latent takes the image's size
    (GetImageSize)."""
    place(z_image_bf16(), graph_server.models_dir("diffusion_models"), "z_image_turbo_bf16.safetensors")
    place(qwen3_4b(), graph_server.models_dir("text_encoders"), "qwen_3_4b.safetensors")
    write(graph_server.models_dir("vae") / "ae.safetensors", vae16_state_dict(dtype=torch.float16))
    place(z_image_fun_controlnet_file(), graph_server.models_dir("model_patches"),
          "Z-Image-Turbo-Fun-Controlnet-Union.safetensors")
    _input_image(graph_server, "image_z_image_turbo_fun_union_controlnet_input_image.png", (48, 64))
    prompt = _convert(graph_server, template("image_z_image_turbo_fun_union_controlnet"))
    kinds = {n["class_type"] for n in prompt.values()}
    assert {"ModelPatchLoader", "QwenImageDiffsynthControlnet", "Canny", "GetImageSize", "UNETLoader"} <= kinds
    (control,) = [n for n in prompt.values() if n["class_type"] == "QwenImageDiffsynthControlnet"]
    try:
        (controlled,) = _images(graph_server, graph_server.wait(graph_server.queue(prompt), timeout=1800))
        control["inputs"]["strength"] = 0.0
        (plain,) = _images(graph_server, graph_server.wait(graph_server.queue(prompt), timeout=1800))
    finally:
        graph_server.server.post("/free", json={"unload_models": True, "free_memory": True})
    assert controlled.shape == plain.shape == (48, 64, 3)
    assert np.abs(controlled.astype(int) - plain.astype(int)).mean() > 0.5
