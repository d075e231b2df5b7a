"""Wan 2.2 S2V through the server: the ``video_wan2_2_14B_s2v`` template converted from its UI format and run.

Random-weight files (``_files_wan_s2v.py``, ``_files_wan.py``) are placed
under the names the template expects: the S2V model (scaled fp8), umt5, the
Wan 2.1 VAE, the wav2vec2 encoder and the lightx2v LoRA. Clips are cut to
64x64 and 5 frames (2 latent frames) with one step per sampler; the
reference image and the speech (a WAV under the template's ``.MP3`` name)
are written to the input folder. The template's bypassed 20-step copy stays
bypassed; its live part samples a first clip and two extensions, doubles the
first latent frame and drops the frames it decodes to, and saves the video
with the sound, which is decoded back with PyAV.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_wan import lora_file, place, umt5_file, vae21_file
from _files_wan_s2v import s2v_file, wav2vec2_file
from _media import Decoded, tones, write_wav
from _templates import template
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

NAME = "video_wan2_2_14B_s2v"
SOUND_NODES = ("WanSoundImageToVideo", "WanSoundImageToVideoExtend")


def shrink(prompt: dict) -> dict:
    """64x64 clips of 5 frames, one step per sampler."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "WanSoundImageToVideo":
            inputs.update(width=64, height=64, length=5)
        elif node["class_type"] == "WanSoundImageToVideoExtend":
            inputs["length"] = 5
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 1
    return prompt


def test_s2v_template_runs_end_to_end(graph_server) -> None:
    place(s2v_file(fp8_scaled=True), graph_server.models_dir("diffusion_models"),
          "wan2.2_s2v_14B_fp8_scaled.safetensors")
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(wav2vec2_file(), graph_server.models_dir("audio_encoders"), "wav2vec2_large_english_fp16.safetensors")
    place(lora_file("t2v"), graph_server.models_dir("loras"), "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors")
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (80, 48, 3), dtype=np.uint8)).save(
        graph_server.input_dir / f"{NAME}_reference_image.jpg")
    write_wav(graph_server.input_dir / f"{NAME}_input_audio.MP3", tones(44100, 1.2), 44100)

    workflow = template(NAME)
    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": workflow}).json()
    assert converted["missing_nodes"] == []
    prompt = shrink(converted["prompt"])
    kinds = sorted(n["class_type"] for n in prompt.values())
    assert kinds.count("WanSoundImageToVideo") == 1 and kinds.count("WanSoundImageToVideoExtend") == 2
    assert kinds.count("KSampler") == 3 and kinds.count("AudioEncoderEncode") == 1
    live = {node["id"] for node in workflow["nodes"] if node.get("mode", 0) == 0}
    assert all(int(k.split(":")[0]) in live for k in prompt)  # the bypassed copy is not sent

    outputs = graph_server.outputs(prompt, timeout=600)
    (saved,) = [o for o in outputs.values() if o.get("images") and o.get("animated")]
    item = saved["images"][0]
    video = Decoded(graph_server.output_dir / item["subfolder"] / item["filename"])
    # three clips of 2 latent frames, the first doubled: 7 latent frames decode to 25, ImageFromBatch drops 3
    assert video.frames.shape == (22, 64, 64, 3) and video.fps == 16
    assert video.frames.std() > 1.0
    assert video.audio is not None and video.audio_codec == "aac"
