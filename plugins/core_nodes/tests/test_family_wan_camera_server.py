"""Wan Fun camera templates through the server: converted from their UI format, run on random-weight files.

The 2.1 templates encode the start image with CLIP vision (a full-size random
ViT-H, see _files_wan.py); the 2.2 template runs the high- and low-noise
experts in two passes. 64x64, 5 frames, 2 steps; the saved video is decoded
back with PyAV.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_wan import clip_vision_h_file, place, transformer_file, umt5_file, vae21_file
from PIL import Image
from test_family_wan_server import convert, saved_video, shrink

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def _common(graph_server) -> None:
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")


def _run(graph_server, name: str, image: str) -> tuple:
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(graph_server.input_dir / image)
    prompt = shrink(convert(graph_server, name))
    (camera,) = [n for n in prompt.values() if n["class_type"] == "WanCameraEmbedding"]
    video = saved_video(graph_server, graph_server.outputs(prompt))
    return prompt, camera, video


def test_wan21_fun_camera_templates(graph_server):
    """video_wan2.1_fun_camera_v1.1_1.3B / _14B: CLIP vision of the start image, Zoom In / Zoom Out, KSampler."""
    _common(graph_server)
    place(clip_vision_h_file(), graph_server.models_dir("clip_vision"), "clip_vision_h.safetensors")
    models = graph_server.models_dir("diffusion_models")
    for size, seed in (("1.3B", 1), ("14B", 2)):
        place(transformer_file("camera21", seed=seed), models, f"wan2.1_fun_camera_v1.1_{size}_bf16.safetensors")
        name = f"video_wan2.1_fun_camera_v1.1_{size}"
        prompt, camera, video = _run(graph_server, name, f"{name}_start_image.jpg")
        assert camera["inputs"]["camera_pose"] in ("Zoom In", "Zoom Out")
        assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16


def test_wan22_fun_camera_template(graph_server):
    """video_wan2_2_14B_fun_camera: high- and low-noise Fun camera experts (scaled fp8), KSamplerAdvanced."""
    _common(graph_server)
    models = graph_server.models_dir("diffusion_models")
    place(transformer_file("camera22", fp8_scaled=True, seed=1), models,
          "wan2.2_fun_camera_high_noise_14B_fp8_scaled.safetensors")
    place(transformer_file("camera22", fp8_scaled=True, seed=2), models,
          "wan2.2_fun_camera_low_noise_14B_fp8_scaled.safetensors")
    prompt, camera, video = _run(graph_server, "video_wan2_2_14B_fun_camera",
                                 "video_wan2_2_14B_fun_camera_start_image.jpg")
    assert sorted(n["class_type"] for n in prompt.values()).count("KSamplerAdvanced") == 2
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16
