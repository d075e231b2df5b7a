"""Flux.1 end to end through the server: the frontend's Flux templates and the Kontext / Fill graph shapes.

Random-weight files (see _flux.py) are placed under the names the templates
expect; everything runs 2 steps at 64x64.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _templates import template

sys.path.insert(0, str(Path(__file__).parent))
from _flux import (  # noqa: E402
    chroma_state_dict,
    clip_l_state_dict,
    flux_params,
    flux_state_dict,
    fp8_mixed,
    prefixed,
    scaled_fp8,
    t5_state_dict,
    vae16_state_dict,
)
from _random_weights import write  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def _shrink(prompt: dict, size: int = 64, steps: int = 2) -> dict:
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptySD3LatentImage", "EmptyLatentImage"):
            inputs.update(width=size, height=size)
        if node["class_type"] == "KSampler":
            inputs.update(steps=steps, seed=7)
        if node["class_type"] == "BasicScheduler":
            inputs.update(steps=steps)
    return prompt


def _saved_images(graph_server, outputs: dict) -> list[np.ndarray]:
    from PIL import Image

    images = []
    for out in outputs.values():
        for item in out.get("images", []):
            path = graph_server.output_dir / item["subfolder"] / item["filename"]
            images.append(np.asarray(Image.open(path)))
    return images


@pytest.fixture(scope="module")
def files(graph_server):
    models = lambda folder: graph_server.models_dir(folder)  # noqa: E731
    write(models("text_encoders") / "clip_l.safetensors", clip_l_state_dict())
    write(models("text_encoders") / "t5xxl_fp16.safetensors", t5_state_dict())
    write(models("vae") / "ae.safetensors", vae16_state_dict(dtype=torch.float16))
    write(models("diffusion_models") / "flux1-dev.safetensors", flux_state_dict(flux_params(), dtype=torch.bfloat16))
    write(models("diffusion_models") / "flux1-fill-dev.safetensors",
          flux_state_dict(flux_params(in_channels=384), seed=4, dtype=torch.bfloat16))
    fp8 = torch.float8_e4m3fn
    schnell = {**prefixed(flux_state_dict(flux_params(guidance_embed=False), seed=2, dtype=fp8),
                          "model.diffusion_model."),
               **prefixed(clip_l_state_dict(), "text_encoders.clip_l.transformer.text_model."),
               **prefixed(t5_state_dict(dtype=fp8), "text_encoders.t5xxl.transformer."),
               **prefixed(vae16_state_dict(dtype=torch.float16), "vae.")}
    write(models("checkpoints") / "flux1-schnell-fp8.safetensors", schnell)
    write(models("diffusion_models") / "chroma-tiny.safetensors", chroma_state_dict(dtype=torch.bfloat16))
    write(models("diffusion_models") / "Chroma1-HD-fp8mixed.safetensors", fp8_mixed(chroma_state_dict(seed=6))[0])
    write(models("text_encoders") / "t5xxl_fp8_e4m3fn_scaled.safetensors",
          scaled_fp8({k: v.float() for k, v in t5_state_dict(seed=7).items()})[0])
    return graph_server


def test_flux_schnell_template_runs_from_an_fp8_checkpoint(files):
    converted = files.server.post("/api/workflows/convert", json={"workflow": template("flux_schnell")}).json()
    assert converted["missing_nodes"] == []
    images = _saved_images(files, files.outputs(_shrink(converted["prompt"])))
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0


def test_flux_dev_template_runs(files):
    converted = files.server.post("/api/workflows/convert",
                                  json={"workflow": template("flux_dev_full_text_to_image")}).json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    loaders = {n["class_type"]: n["inputs"] for n in prompt.values() if "Loader" in n["class_type"]}
    assert loaders["UNETLoader"]["unet_name"] == "flux1-dev.safetensors"
    assert loaders["DualCLIPLoader"]["type"] == "flux"
    images = _saved_images(files, files.outputs(prompt))
    assert len(images) == 1 and images[0].shape == (64, 64, 3)


def _txt2img(unet: str, weight_dtype: str = "default", conditioning: list | None = None) -> dict:
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": weight_dtype}},
        "clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                             "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "pos": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip": ["clip", 0], "clip_l": "a red fox",
                                                                "t5xxl": "a red fox in the snow", "guidance": 3.5}},
        "guided": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": 4.0}},
        "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["pos", 0]}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": conditioning or ["guided", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["decode", 0], "name": "image"}},
        "cond": {"class_type": "TestProbe", "inputs": {"value": ["guided", 0], "name": "cond"}},
    }
    return prompt


def test_fp8_weight_dtype_and_guidance(files):
    out = files.run(_txt2img("flux1-dev.safetensors", "fp8_e4m3fn"))
    assert out["image"].shape == (1, 64, 64, 3) and np.isfinite(out["image"]).all()
    assert out["cond"][0]["options"]["guidance"] == 4.0


def test_kontext_reference_graph(files):
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(
        files.input_dir / "kontext_in.png")
    prompt = _txt2img("flux1-dev.safetensors", conditioning=["method", 0])
    prompt.update({
        "load": {"class_type": "LoadImage", "inputs": {"image": "kontext_in.png"}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["load", 0], "vae": ["vae", 0]}},
        "ref": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["guided", 0], "latent": ["encode", 0]}},
        "ref2": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["ref", 0], "latent": ["encode", 0]}},
        "method": {"class_type": "FluxKontextMultiReferenceLatentMethod",
                   "inputs": {"conditioning": ["ref2", 0], "reference_latents_method": "uxo/uno"}},
        "scaled": {"class_type": "FluxKontextImageScale", "inputs": {"image": ["load", 0]}},
        "size": {"class_type": "TestProbe", "inputs": {"value": ["scaled", 0], "name": "scaled"}},
        "refs": {"class_type": "TestProbe", "inputs": {"value": ["method", 0], "name": "refs"}},
    })
    out = files.run(prompt)
    assert out["image"].shape == (1, 64, 64, 3) and np.isfinite(out["image"]).all()
    assert out["scaled"].shape == (1, 880, 1184, 3)  # 4:3 -> the closest Kontext resolution
    options = out["refs"][0]["options"]
    assert options["reference_latents_method"] == "uxo" and options["reference_latents"].count("tensor(") == 2


def test_fill_inpaint_graph(files):
    from PIL import Image

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 128
    rgba[..., 3] = 255
    rgba[16:48, 16:48, 3] = 0  # the hole to fill
    Image.fromarray(rgba).save(files.input_dir / "fill_in.png")
    prompt = _txt2img("flux1-fill-dev.safetensors", conditioning=["inpaint", 0])
    prompt.update({
        "load": {"class_type": "LoadImage", "inputs": {"image": "fill_in.png"}},
        "inpaint": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["guided", 0], "negative": ["neg", 0], "vae": ["vae", 0], "pixels": ["load", 0],
            "mask": ["load", 1], "noise_mask": True}},
    })
    prompt["sample"]["inputs"]["negative"] = ["inpaint", 1]
    prompt["sample"]["inputs"]["latent_image"] = ["inpaint", 2]
    out = files.run(prompt)
    assert out["image"].shape == (1, 64, 64, 3) and np.isfinite(out["image"]).all()


def test_disable_guidance(files):
    prompt = _txt2img("flux1-dev.safetensors", conditioning=["off", 0])
    prompt["off"] = {"class_type": "FluxDisableGuidance", "inputs": {"conditioning": ["guided", 0]}}
    prompt["cond"]["inputs"]["value"] = ["off", 0]
    out = files.run(prompt)
    assert out["cond"][0]["options"]["guidance"] is None and np.isfinite(out["image"]).all()


def test_chroma_graph(files):
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "chroma-tiny.safetensors",
                                                        "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl_fp16.safetensors", "type": "chroma"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a lighthouse at dusk"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "blurry"}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 3, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "chroma"}},
    }
    images = _saved_images(files, files.outputs(prompt))
    assert len(images) == 1 and images[0].shape == (64, 64, 3)


def test_chroma_template_runs_from_fp8_mixed_and_scaled_t5_files(files):
    converted = files.server.post("/api/workflows/convert",
                                  json={"workflow": template("image_chroma_text_to_image")}).json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    types = {n["class_type"] for n in prompt.values()}
    assert {"T5TokenizerOptions", "ModelSamplingAuraFlow", "CFGGuider", "SamplerCustomAdvanced"} <= types
    images = _saved_images(files, files.outputs(prompt))
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0


def test_t5_tokenizer_options(files):
    prompt = {
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl_fp16.safetensors", "type": "chroma"}},
        "opts": {"class_type": "T5TokenizerOptions", "inputs": {"clip": ["clip", 0], "min_padding": 3,
                                                                "min_length": 12}},
        "plain": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a fox"}},
        "padded": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["opts", 0], "text": "a fox"}},
        "p1": {"class_type": "TestProbe", "inputs": {"value": ["plain", 0], "name": "plain"}},
        "p2": {"class_type": "TestProbe", "inputs": {"value": ["padded", 0], "name": "padded"}},
    }
    out = files.run(prompt)
    plain, padded = out["plain"][0]["shape"], out["padded"][0]["shape"]
    assert padded[1] == 12 and plain[1] < 12  # Chroma's T5 is not padded unless asked


def test_fill_inpaint_template_runs(files):
    from PIL import Image

    rgba = np.random.default_rng(2).integers(0, 255, (64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[16:48, 16:48, 3] = 0  # the area to inpaint: transparent, as the mask editor saves it
    Image.fromarray(rgba, "RGBA").save(files.input_dir / "flux_fill_inpaint_example_input_image.png")
    converted = files.server.post("/api/workflows/convert",
                                  json={"workflow": template("flux_fill_inpaint_example")}).json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    types = {n["class_type"] for n in prompt.values()}
    assert {"InpaintModelConditioning", "DifferentialDiffusion", "FluxGuidance"} <= types
    images = _saved_images(files, files.outputs(prompt))
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0


def test_model_sampling_flux_shifts_the_flux_schedule(files):
    prompt = _txt2img("flux1-dev.safetensors")
    prompt["shift"] = {"class_type": "ModelSamplingFlux", "inputs": {"model": ["unet", 0], "max_shift": 1.15,
                                                                    "base_shift": 0.5, "width": 64, "height": 64}}
    plain = files.run(prompt)["image"]
    prompt["sample"]["inputs"]["model"] = ["shift", 0]
    shifted = files.run(prompt)["image"]
    assert shifted.shape == plain.shape and np.isfinite(shifted).all()
    assert np.abs(shifted - plain).max() > 0  # 64x64 gives a smaller shift than the default 1.15
