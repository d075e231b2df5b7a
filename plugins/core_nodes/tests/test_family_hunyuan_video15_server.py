"""HunyuanVideo 1.5 through the server: the frontend's 1.5 templates converted from their UI format and run end to end.

Random-weight files (see _files_hunyuan_video15.py) are placed under the names
the templates expect. Sizes are cut to a tiny video (64x64, 5 frames = 2 latent
frames, 2 steps a pass); the super-resolution pass upscales the latent to
128x128 (not 1920x1080) before the SR model's two steps. Both saved files are
decoded back with PyAV.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_hunyuan_video15 import (
    byt5_file,
    qwen_file,
    siglip_file,
    transformer_file,
    upsampler_file,
    vae_file,
)
from _files_wan import place
from PIL import Image
from test_family_wan_server import template

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def convert(graph_server, name: str, super_resolution: bool = False) -> dict:
    """The template as a prompt; ``super_resolution`` enables its bypassed 1080p stage (EasyCache stays off)."""
    workflow = template(name)
    if super_resolution:
        for node in workflow["nodes"]:
            if node.get("mode") == 4 and node["type"] != "EasyCache":
                node["mode"] = 0
    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": workflow}).json()
    assert converted["missing_nodes"] == []
    return converted["prompt"]


def shrink(prompt: dict) -> dict:
    """64x64, 5 frames; every scheduler 2 steps (the SR pass's split point after the first); SR to 128x128."""
    for node in prompt.values():
        inputs = node["inputs"]
        kind = node["class_type"]
        if kind in ("EmptyHunyuanVideo15Latent", "HunyuanVideo15ImageToVideo"):
            inputs.update(width=64, height=64, length=5)
        elif kind == "HunyuanVideo15LatentUpscaleWithModel":
            inputs.update(width=128, height=128)
        elif kind == "BasicScheduler":
            inputs["steps"] = 2
        elif kind == "SplitSigmas":
            inputs["step"] = 1
    return prompt


def saved_videos(graph_server, outputs: dict) -> list:
    from _media import Decoded

    found = []
    for output in outputs.values():
        for item in output.get("images", []) if output.get("animated") else []:
            found.append(Decoded(graph_server.output_dir / item["subfolder"] / item["filename"]))
    return found


def place_common(graph_server) -> None:
    encoders, models = graph_server.models_dir("text_encoders"), graph_server.models_dir("diffusion_models")
    place(qwen_file(), encoders, "qwen_2.5_vl_7b_fp8_scaled.safetensors")
    place(byt5_file(), encoders, "byt5_small_glyphxl_fp16.safetensors")
    place(vae_file(), graph_server.models_dir("vae"), "hunyuanvideo15_vae_fp16.safetensors")
    place(transformer_file("sr"), models, "hunyuanvideo1.5_1080p_sr_distilled_fp16.safetensors")
    place(upsampler_file("1080p"), graph_server.models_dir("latent_upscale_models"),
          "hunyuanvideo15_latent_upsampler_1080p.safetensors")


def test_text_to_video_template_with_super_resolution(graph_server):
    """video_hunyuan_video_1.5_720p_t2v: DualCLIPLoader (Qwen2.5-VL + byT5), the 720p T2V model, SaveVideo;
    then with its 1080p stage enabled: the latent upsampler and the distilled SR model (SplitSigmas,
    DisableNoise, HunyuanVideo15SuperResolution), both videos saved."""
    place_common(graph_server)
    place(transformer_file("t2v"), graph_server.models_dir("diffusion_models"),
          "hunyuanvideo1.5_720p_t2v_fp16.safetensors")
    name = "video_hunyuan_video_1.5_720p_t2v"
    prompt = shrink(convert(graph_server, name))
    assert {"DualCLIPLoader", "EmptyHunyuanVideo15Latent", "SaveVideo"} <= {n["class_type"] for n in prompt.values()}
    (video,) = saved_videos(graph_server, graph_server.outputs(prompt, timeout=600))
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 24
    assert video.frames.std() > 1.0  # not blank

    prompt = shrink(convert(graph_server, name, super_resolution=True))
    assert {"HunyuanVideo15SuperResolution", "HunyuanVideo15LatentUpscaleWithModel", "LatentUpscaleModelLoader",
            "SplitSigmas", "DisableNoise"} <= {n["class_type"] for n in prompt.values()}
    (text,) = [n for n in prompt.values() if n["class_type"] == "CLIPTextEncode" and n["inputs"]["text"]]
    text["inputs"]["text"] = 'A paper airplane glides past a shop sign that reads "OPEN".'  # byT5 runs too
    videos = saved_videos(graph_server, graph_server.outputs(prompt, timeout=900))
    assert sorted(v.frames.shape for v in videos) == [(5, 64, 64, 3), (5, 128, 128, 3)]
    assert all(v.fps == 24 and v.frames.std() > 1.0 for v in videos)


def test_image_to_video_template(graph_server):
    """video_hunyuan_video_1.5_720p_i2v: SigLIP (CLIPVisionLoader / CLIPVisionEncode) and the VAE-encoded start
    image through HunyuanVideo15ImageToVideo into the I2V model; then with the 1080p stage re-pinning the
    start image (HunyuanVideo15SuperResolution with vae, start_image and clip_vision_output)."""
    place_common(graph_server)
    place(transformer_file("t2v", seed=2), graph_server.models_dir("diffusion_models"),
          "hunyuanvideo1.5_720p_i2v_fp16.safetensors")
    place(siglip_file(), graph_server.models_dir("clip_vision"), "sigclip_vision_patch14_384.safetensors")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(
        graph_server.input_dir / "video_hunyuan_video_1.5_720p_i2v_input_image.png")
    name = "video_hunyuan_video_1.5_720p_i2v"
    prompt = shrink(convert(graph_server, name))
    assert {"CLIPVisionLoader", "CLIPVisionEncode", "HunyuanVideo15ImageToVideo"} <= \
        {n["class_type"] for n in prompt.values()}
    (video,) = saved_videos(graph_server, graph_server.outputs(prompt, timeout=600))
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 24

    prompt = shrink(convert(graph_server, name, super_resolution=True))
    (sr,) = [n for n in prompt.values() if n["class_type"] == "HunyuanVideo15SuperResolution"]
    assert {"vae", "start_image", "clip_vision_output"} <= set(sr["inputs"])
    videos = saved_videos(graph_server, graph_server.outputs(prompt, timeout=900))
    assert sorted(v.frames.shape for v in videos) == [(5, 64, 64, 3), (5, 128, 128, 3)]
