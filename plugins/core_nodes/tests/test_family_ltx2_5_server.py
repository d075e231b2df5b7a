"""LTX-2.5 through the server: the frontend's LTX-2.5 templates converted from their UI format and run end to end.

The released split files at small sizes (_files_ltx2_5.py): the transformer
(UNETLoader), the video VAE and LTX-2.3's audio VAE with its vocoder
(VAELoader), the Gemma 4 text encoder with LTX-2.5's projection and the
Gemma 4 prompt enhancer (CLIPLoader ``ltxv``), LTX-2's x2 latent upsampler.
The enhancer is on, as installed, and writes a few tokens. Sizes and steps
are cut as for LTX-2 (test_family_ltx2_server.shrink); each saved MP4 is
decoded with PyAV: 9 frames of 128x128 and an audio stream.
"""

from __future__ import annotations

import pytest
from _files_ltx2 import upsampler_file
from _files_ltx2_3 import audio_vae_file
from _files_ltx2_5 import enhancer_file, text_encoder_file, transformer_file, video_vae_file
from _files_wan import place
from test_family_hunyuan_video15_server import convert, saved_videos
from test_family_ltx2_server import SIZES, check_video, image, shrink

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def place_files(graph_server) -> None:
    place(transformer_file(), graph_server.models_dir("diffusion_models"),
          "ltx-2.5-22b-distilled-transformer-comfy-int8-convrot.safetensors")
    place(video_vae_file(), graph_server.models_dir("vae"), "ltx-2.5-video-vae-bf16.safetensors")
    place(audio_vae_file(), graph_server.models_dir("vae"), "ltx-2.5-audio-vae-bf16.safetensors")
    place(text_encoder_file(), graph_server.models_dir("text_encoders"),
          "gemma4-12b-with-proj-ltx-2.5-comfy-int8-convrot.safetensors")
    place(enhancer_file(), graph_server.models_dir("text_encoders"), "gemma4_e2b_it_int8_convrot.safetensors")
    place(upsampler_file(), graph_server.models_dir("latent_upscale_models"),
          "ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors")


def fixed_size(prompt: dict) -> dict:
    """ResolutionSelector's width and height (its smallest budget is 0.1 megapixels) replaced by a template size,
    which ``shrink`` then cuts like the others."""
    selectors = {i for i, n in prompt.items() if n["class_type"] == "ResolutionSelector"}
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] in selectors:
                node["inputs"][key] = SIZES[-1]
    return {i: n for i, n in prompt.items() if i not in selectors}


def run(graph_server, name: str) -> tuple[dict, object]:
    prompt = shrink(fixed_size(convert(graph_server, name)))
    for node in prompt.values():
        if node["class_type"] == "TextGenerateLTX2Prompt":
            node["inputs"]["max_length"] = 4
        elif node["class_type"] == "ComfyMathExpression" and node["inputs"].get("expression") in ("a * b + 1",
                                                                                                  "a * b"):
            node["inputs"]["expression"] = "9"
    (video,) = saved_videos(graph_server, graph_server.outputs(prompt, timeout=900))
    return prompt, video


def kinds(prompt: dict) -> set[str]:
    return {n["class_type"] for n in prompt.values()}


def test_text_to_video_template(graph_server):
    """video_ltx2_5_t2v: the enhancer's text (switch on) into the Gemma 4 text encoder, LTXVDualCFGGuider, two
    passes around LTXVLatentUpsampler."""
    place_files(graph_server)
    prompt, video = run(graph_server, "video_ltx2_5_t2v")
    assert {"TextGenerateLTX2Prompt", "CLIPLoader", "UNETLoader", "LTXVLatentUpsampler"} <= kinds(prompt)
    check_video(graph_server, video, 24)


def test_image_to_video_template(graph_server):
    place_files(graph_server)
    image(graph_server, "neon_cyborg_portrait.png")
    prompt, video = run(graph_server, "video_ltx2_5_i2v")
    assert {"LTXVImgToVideoInplace", "LoadImage"} <= kinds(prompt)
    check_video(graph_server, video, 24)


def test_first_last_frame_template(graph_server):
    place_files(graph_server)
    for name in ("robot_hand.png", "robot_hand_energy.png"):
        image(graph_server, name)
    prompt, video = run(graph_server, "video_ltx2_5_flf2v")
    assert {"LTXVAddGuide", "LTXVCropGuides"} <= kinds(prompt)
    check_video(graph_server, video, 24)
