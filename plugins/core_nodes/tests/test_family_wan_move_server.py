"""Wan-Move through the server: the ``video_wanmove_480p`` template converted from its UI format and run.

Random-weight files are placed under the names the template expects: the
Wan-Move model (Wan 2.1 I2V's layout, scaled fp8), umt5, the Wan 2.1 VAE, a
full-size random ViT-H for CLIP vision and the lightx2v LoRA. The start image
is scaled to 64x64, the clip cut to 5 frames with two steps, and the
template's three generated track sets redrawn for the small frame (their
relative coordinates kept), so the tracks still cross the latents. The
saved video is decoded back with PyAV. (The template's track preview feeds a
bypassed CreateVideo, so it is not run; ``test_family_wan_move.py`` checks it.)
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_wan import clip_vision_h_file, lora_file, place, transformer_file, umt5_file, vae21_file
from PIL import Image
from test_family_wan_server import convert, saved_video

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

NAME = "video_wanmove_480p"


def shrink(prompt: dict) -> dict:
    """64x64, 5 frames, two steps; tracks generated for that frame."""
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "ImageScale":
            inputs.update(width=64, height=64)
        elif kind == "GenerateTracks":
            inputs.update(width=64, height=64, num_frames=5)
        elif kind == "WanMoveTrackToVideo":
            inputs["length"] = 5
        elif kind == "KSampler":
            inputs["steps"] = 2
    return prompt


def test_wanmove_template_runs_end_to_end(graph_server) -> None:
    place(transformer_file("i2v", fp8_scaled=True), graph_server.models_dir("diffusion_models"),
          "Wan21-WanMove_fp8_scaled_e4m3fn_KJ.safetensors")
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(clip_vision_h_file(), graph_server.models_dir("clip_vision"), "clip_vision_h.safetensors")
    place(lora_file("i2v"), graph_server.models_dir("loras"),
          "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors")
    rng = np.random.default_rng(6)
    Image.fromarray(rng.integers(0, 255, (48, 72, 3), dtype=np.uint8)).save(
        graph_server.input_dir / "snowboard_rush.png")

    prompt = shrink(convert(graph_server, NAME))
    kinds = sorted(n["class_type"] for n in prompt.values())
    assert kinds.count("GenerateTracks") == 3 and kinds.count("WanMoveConcatTrack") == 2
    assert "WanMoveTracksFromCoords" not in kinds  # bypassed in the template
    outputs = graph_server.outputs(prompt, timeout=600)
    video = saved_video(graph_server, outputs)
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16
    assert video.frames.std() > 1.0
