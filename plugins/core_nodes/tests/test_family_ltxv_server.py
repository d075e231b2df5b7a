"""LTX-Video 0.9 through the server: the frontend's two LTXV templates converted from their UI format and run end
to end.

The random-weight checkpoints and T5 of _files_ltxv.py sit in the model
folders under the names the templates load (the 0.9 checkpoint for text to
video, 0.9.5 with its timestep-conditioned VAE for image to video). Sizes
are cut to 9 frames at 64x64 and 2 scheduled steps; the saved MP4 is decoded
back with PyAV.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_ltxv import checkpoint_file, t5_file
from _media import Decoded
from _random_weights import link
from _templates import template
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

SIZE, FRAMES = 64, 9


@pytest.fixture(scope="module")
def server(graph_server):
    models = graph_server.models_dir
    link(checkpoint_file("0.9.0"), models("checkpoints") / "ltx-video-2b-v0.9.safetensors")
    link(checkpoint_file("0.9.5"), models("checkpoints") / "ltx-video-2b-v0.9.5.safetensors")
    link(t5_file(), models("text_encoders") / "t5xxl_fp16.safetensors")
    yield graph_server


def run(server, name: str) -> tuple[dict, Decoded]:
    """The template as a prompt at 64x64, 9 frames, 2 steps; the one video it saves, decoded."""
    converted = server.server.post("/api/workflows/convert", json={"workflow": template(name)}).json()
    assert converted["missing_nodes"] == []
    prompt = converted["prompt"]
    for node in prompt.values():
        if node["class_type"] in ("EmptyLTXVLatentVideo", "LTXVImgToVideo"):
            node["inputs"].update(width=SIZE, height=SIZE, length=FRAMES)
        elif node["class_type"] == "LTXVScheduler":
            node["inputs"]["steps"] = 2
    outputs = server.outputs(prompt, timeout=600)
    (video,) = [Decoded(server.output_dir / item["subfolder"] / item["filename"])
                for output in outputs.values() if output.get("animated") for item in output.get("images", [])]
    return prompt, video


def check(video: Decoded) -> None:
    assert video.frames.shape == (FRAMES, SIZE, SIZE, 3) and video.fps == 24
    assert video.frames.std() > 1.0  # not blank


def test_text_to_video_template(server):
    """ltxv_text_to_video: CLIPLoader type ``ltxv`` (T5), the 0.9 checkpoint, LTXVConditioning, the empty
    video latent, LTXVScheduler, SamplerCustom with CFG, VAEDecode, CreateVideo, SaveVideo."""
    prompt, video = run(server, "ltxv_text_to_video")
    loader = next(n for n in prompt.values() if n["class_type"] == "CLIPLoader")
    assert loader["inputs"]["type"] == "ltxv"
    check(video)


def test_image_to_video_template(server):
    """ltxv_image_to_video: the 0.9.5 checkpoint, the start image encoded by its VAE into the first latent frame
    (LTXVImgToVideo, strength 0.15), decoded by the timestep-conditioned decoder."""
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)).save(
        server.input_dir / "ltxv_image_to_video_input_image.jpg")
    prompt, video = run(server, "ltxv_image_to_video")
    assert {"LoadImage", "LTXVImgToVideo"} <= {n["class_type"] for n in prompt.values()}
    check(video)
