"""Wan ATI through the server: the ``video_wan_ati`` template converted from its UI format and run.

Random-weight files are placed under the names the template expects: the
ATI model (Wan 2.1 I2V's layout in plain fp8, loaded with ``fp8_e4m3fn`` as
the template asks), umt5, the Wan 2.1 VAE and a full-size random ViT-H for
CLIP vision. The clip is cut to 64x64 and 5 frames with two steps; the
template's track (drawn on a 720x480 frame) is scaled to the small frame and
the temperature lowered to suit an 8x8 latent, so the track still reaches
the latents. The saved video is decoded back with PyAV.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _files_wan import clip_vision_h_file, place, umt5_file, vae21_file
from _files_wan_ati import ati_file
from PIL import Image
from test_family_wan_server import convert, saved_video

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

NAME = "video_wan_ati"


def _scaled(tracks: str, sx: float, sy: float) -> str:
    batches = json.loads(tracks)
    return json.dumps([[{"x": p["x"] * sx, "y": p["y"] * sy} for p in track] for track in batches])


def shrink(prompt: dict) -> dict:
    """A 64x64 clip of 5 frames, two steps, the track scaled from the template's 720x480 frame."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "WanTrackToVideo":
            sx, sy = 64 / inputs["width"], 64 / inputs["height"]
            inputs.update(width=64, height=64, length=5, temperature=4.0)
            source = prompt[inputs["tracks"][0]]["inputs"] if isinstance(inputs["tracks"], list) else inputs
            key = "value" if isinstance(inputs["tracks"], list) else "tracks"
            source[key] = _scaled(source[key], sx, sy)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 2
    return prompt


def test_ati_template_runs_end_to_end(graph_server) -> None:
    place(ati_file(), graph_server.models_dir("diffusion_models"), "Wan2_1-I2V-ATI-14B_fp8_e4m3fn.safetensors")
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(clip_vision_h_file(), graph_server.models_dir("clip_vision"), "clip_vision_h.safetensors")
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (48, 72, 3), dtype=np.uint8)).save(
        graph_server.input_dir / f"{NAME}_input_image.jpg")

    prompt = shrink(convert(graph_server, NAME))
    (track,) = [n for n in prompt.values() if n["class_type"] == "WanTrackToVideo"]
    assert isinstance(track["inputs"]["tracks"], list)  # the PrimitiveStringMultiline node's string
    kinds = sorted(n["class_type"] for n in prompt.values())
    assert kinds.count("CLIPVisionEncode") == 1 and kinds.count("KSampler") == 1

    video = saved_video(graph_server, graph_server.outputs(prompt, timeout=600))
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16
    assert video.frames.std() > 1.0
