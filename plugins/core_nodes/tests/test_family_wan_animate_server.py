"""Animate and Phantom through the server: API graphs on random-weight files, saved as video and decoded back.

No local template uses WanAnimateToVideo or WanPhantomSubjectToVideo, so each
graph is the shortest a user would build: the model, umt5 and the Wan 2.1
VAE (``_files_wan.py``, ``_files_wan_animate.py``), the node at 64x64 and 5
frames, two sampler steps, then (Animate) TrimVideoLatent by the node's
``trim_latent`` output, VAEDecode, CreateVideo and SaveVideo. The saved file
is decoded with PyAV.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_wan import place, transformer_file, umt5_file, vae21_file
from _files_wan_animate import animate_file
from _media import Decoded
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def _common(graph_server, unet: str) -> dict:
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                     "type": "wan", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a person dancing in a garden", "clip": ["2", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurred, static", "clip": ["2", 0]}},
    }


def _image(graph_server, name: str, seed: int, size: tuple[int, int] = (72, 56)) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(graph_server.input_dir / name)
    return name


def _sampled_video(prompt: dict, positive: list, negative: list, latent: list, decode: list) -> dict:
    prompt.update({
        "20": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": positive, "negative": negative, "latent_image": latent, "denoise": 1.0}},
        "22": {"class_type": "VAEDecode", "inputs": {"samples": decode, "vae": ["3", 0]}},
        "23": {"class_type": "CreateVideo", "inputs": {"images": ["22", 0], "fps": 16}},
        "24": {"class_type": "SaveVideo", "inputs": {"video": ["23", 0], "filename_prefix": "video/wan",
                                                     "format": "auto", "codec": "auto"}},
    })
    return prompt


def _saved(graph_server, outputs: dict) -> Decoded:
    (saved,) = [o for o in outputs.values() if o.get("images") and o.get("animated")]
    item = saved["images"][0]
    return Decoded(graph_server.output_dir / item["subfolder"] / item["filename"])


def test_animate_graph_runs_end_to_end(graph_server) -> None:
    place(animate_file(), graph_server.models_dir("diffusion_models"), "wan2.2_animate_14B_bf16.safetensors")
    prompt = _common(graph_server, "wan2.2_animate_14B_bf16.safetensors")
    prompt.update({
        "6": {"class_type": "LoadImage", "inputs": {"image": _image(graph_server, "animate_ref.png", 1)}},
        "7": {"class_type": "LoadImage", "inputs": {"image": _image(graph_server, "animate_face.png", 2, (40, 40))}},
        "8": {"class_type": "LoadImage", "inputs": {"image": _image(graph_server, "animate_pose.png", 3)}},
        "9": {"class_type": "WanAnimateToVideo", "inputs": {
            "positive": ["4", 0], "negative": ["5", 0], "vae": ["3", 0], "width": 64, "height": 64, "length": 5,
            "batch_size": 1, "continue_motion_max_frames": 5, "video_frame_offset": 0,
            "reference_image": ["6", 0], "face_video": ["7", 0], "pose_video": ["8", 0]}},
        # the node's latent holds the reference frame first; its trim_latent output drops it
        "21": {"class_type": "TrimVideoLatent", "inputs": {"samples": ["20", 0], "trim_amount": ["9", 3]}},
    })
    outputs = graph_server.outputs(_sampled_video(prompt, ["9", 0], ["9", 1], ["9", 2], ["21", 0]), timeout=600)
    video = _saved(graph_server, outputs)
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16
    assert video.frames.std() > 1.0


def test_phantom_graph_runs_end_to_end(graph_server) -> None:
    place(transformer_file("t2v"), graph_server.models_dir("diffusion_models"), "wan2.1_t2v_1.3B_fp16.safetensors")
    prompt = _common(graph_server, "wan2.1_t2v_1.3B_fp16.safetensors")
    prompt.update({
        "6": {"class_type": "LoadImage", "inputs": {"image": _image(graph_server, "phantom_subject.png", 4)}},
        "9": {"class_type": "WanPhantomSubjectToVideo", "inputs": {
            "positive": ["4", 0], "negative": ["5", 0], "vae": ["3", 0], "width": 64, "height": 64, "length": 5,
            "batch_size": 1, "images": ["6", 0]}},
    })
    # negative_img_text: both the subjects and the text negated, as Phantom's workflows use it
    outputs = graph_server.outputs(_sampled_video(prompt, ["9", 0], ["9", 2], ["9", 3], ["20", 0]), timeout=600)
    video = _saved(graph_server, outputs)
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16
    assert video.frames.std() > 1.0
