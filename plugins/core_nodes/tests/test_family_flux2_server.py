"""Flux.2 klein end to end through the server: the frontend's klein text-to-image and image-edit templates.

Random-weight files (see _flux.py: a reduced transformer, Qwen3 at a reduced
width with the 28 layers klein reads, the full Flux.2 VAE) are placed under
the names the template expects; it runs 2 steps at 64x64.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _flux import (  # noqa: E402
    flux2_params,
    flux2_state_dict,
    flux2_vae_state_dict,
    fp8_mixed,
    klein_encoder_state_dict,
    mistral_encoder_state_dict,
)
from _random_weights import fp8_state_dict, write  # noqa: E402
from _templates import template  # noqa: E402
from test_family_flux_server import _saved_images  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


@pytest.fixture(scope="module")
def files(graph_server):
    models = lambda folder: graph_server.models_dir(folder)  # noqa: E731
    write(models("text_encoders") / "qwen_3_4b.safetensors", klein_encoder_state_dict(dtype=torch.bfloat16))
    write(models("vae") / "flux2-vae.safetensors", flux2_vae_state_dict(dtype=torch.bfloat16))
    params = flux2_params(context_in_dim=3 * 64, guidance_embed=False)
    write(models("diffusion_models") / "flux-2-klein-4b.safetensors",
          flux2_state_dict(params, seed=1, dtype=torch.bfloat16))
    write(models("diffusion_models") / "flux-2-klein-base-4b.safetensors",
          flux2_state_dict(params, seed=2, dtype=torch.bfloat16))
    write(models("diffusion_models") / "flux-2-klein-4b-fp8.safetensors",
          fp8_state_dict(flux2_state_dict(params, seed=3)))
    # Flux.2 dev: Mistral Small 3 (fp8, embeddings and the tekken tensor as shipped) and an fp8 mixed transformer
    write(models("text_encoders") / "mistral_3_small_flux2_fp8.safetensors",
          fp8_state_dict(mistral_encoder_state_dict(), skip=lambda key: "embed_tokens" in key))
    dev = flux2_params(context_in_dim=3 * 64, guidance_embed=True)
    write(models("diffusion_models") / "flux2_dev_fp8mixed.safetensors",
          fp8_mixed(flux2_state_dict(dev, seed=4))[0])
    write(models("text_encoders") / "mistral_3_small_flux2_bf16.safetensors",
          mistral_encoder_state_dict(seed=9, dtype=torch.bfloat16))
    write(models("vae") / "full_encoder_small_decoder.safetensors",
          flux2_vae_state_dict(seed=6, dtype=torch.bfloat16, decoder_widths=(96, 192, 384, 384)))
    g = torch.Generator().manual_seed(5)
    lora = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.randn(4, 256, generator=g) * 0.01,
            "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.randn(768, 4, generator=g) * 0.01}
    write(models("loras") / "Flux2TurboComfyv2.safetensors", lora)
    write(models("loras") / "Flux_2-Turbo-LoRA_comfyui.safetensors", lora)
    return graph_server


def _shrink(prompt: dict, size: int = 64, steps: int = 2) -> dict:
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyFlux2LatentImage":
            inputs.update(width=size, height=size)
        if node["class_type"] == "Flux2Scheduler":
            inputs.update(width=size, height=size, steps=steps)
        if node["class_type"] == "ImageScaleToTotalPixels":  # references of about 0.01 megapixels
            inputs.update(megapixels=0.01)
    return prompt


def test_klein_text_to_image_template_runs(files):
    converted = files.server.post("/api/workflows/convert",
                                  json={"workflow": template("image_flux2_klein_text_to_image")}).json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    loaders = [n["inputs"] for n in prompt.values() if n["class_type"] == "CLIPLoader"]
    assert loaders and all(x["type"] == "flux2" and x["clip_name"] == "qwen_3_4b.safetensors" for x in loaders)
    images = _saved_images(files, files.outputs(prompt))
    assert images and all(image.shape == (64, 64, 3) for image in images)
    assert all(np.isfinite(image).all() and image.std() > 0 for image in images)


def test_klein_image_edit_template_runs_with_reference_latents(files):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("handbag_white.png", "comfy_logo_blue.png"):
        Image.fromarray(rng.integers(0, 255, (80, 64, 3), dtype=np.uint8)).save(files.input_dir / name)
    converted = files.server.post("/api/workflows/convert",
                                  json={"workflow": template("image_flux2_klein_image_edit_4b_distilled")}).json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    types = [n["class_type"] for n in prompt.values()]
    assert types.count("ReferenceLatent") >= 2 and "VAEEncode" in types
    assert {n["inputs"]["unet_name"] for n in prompt.values() if n["class_type"] == "UNETLoader"} == {
        "flux-2-klein-4b-fp8.safetensors"}
    images = _saved_images(files, files.outputs(prompt))
    assert images and all(image.shape == (64, 64, 3) and image.std() > 0 for image in images)


def test_flux2_dev_template_runs_with_mistral_and_references(files):
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in ("image_flux2_input_Illustration.png", "image_flux2_input_ref_image.png"):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(files.input_dir / name)
    converted = files.server.post("/api/workflows/convert", json={"workflow": template("image_flux2_fp8")}).json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    clip = [n["inputs"] for n in prompt.values() if n["class_type"] == "CLIPLoader"]
    assert clip == [{"clip_name": "mistral_3_small_flux2_fp8.safetensors", "type": "flux2", "device": "default"}]
    images = _saved_images(files, files.outputs(prompt))
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0


def test_flux2_dev_text_to_image_template_runs_with_the_small_decoder(files):
    converted = files.server.post("/api/workflows/convert",
                                  json={"workflow": template("image_flux2_text_to_image")}).json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    vae = [n["inputs"]["vae_name"] for n in prompt.values() if n["class_type"] == "VAELoader"]
    assert vae == ["full_encoder_small_decoder.safetensors"]
    images = _saved_images(files, files.outputs(prompt))
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0
