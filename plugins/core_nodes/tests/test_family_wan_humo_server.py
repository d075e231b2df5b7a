"""HuMo through the server: the ``video_humo`` template converted from its UI format and run.

Random-weight files (``_files_wan_humo.py``, ``_files_wan.py``) are placed
under the names the template expects: the HuMo model (fp8), umt5, the Wan
2.1 VAE, the Whisper encoder and the lightx2v LoRA. The clip is cut to 64x64
and 5 frames (2 latent frames) with two steps; the reference image and the
speech are written to the input folder. The template's bypassed RecordAudio
node stays out; the video is saved with the sound and decoded back with PyAV.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_wan import lora_file, place, umt5_file, vae21_file
from _files_wan_humo import humo_file, whisper_file
from _media import Decoded, tones, write_wav
from _templates import template
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

NAME = "video_humo"


def shrink(prompt: dict) -> dict:
    """A 64x64 clip of 5 frames, two steps."""
    for node in prompt.values():
        if node["class_type"] == "WanHuMoImageToVideo":
            node["inputs"].update(width=64, height=64, length=5)
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return prompt


def test_humo_template_runs_end_to_end(graph_server) -> None:
    place(humo_file(fp8=True), graph_server.models_dir("diffusion_models"), "humo_17B_fp8_e4m3fn.safetensors")
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(whisper_file(), graph_server.models_dir("audio_encoders"), "whisper_large_v3_fp16.safetensors")
    place(lora_file("t2v"), graph_server.models_dir("loras"),
          "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors")
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 255, (80, 48, 3), dtype=np.uint8)).save(
        graph_server.input_dir / f"{NAME}_reference_image.png")
    write_wav(graph_server.input_dir / f"{NAME}_input_audio.wav", tones(44100, 1.0), 44100)

    workflow = template(NAME)
    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": workflow}).json()
    assert converted["missing_nodes"] == []
    prompt = shrink(converted["prompt"])
    kinds = sorted(n["class_type"] for n in prompt.values())
    assert kinds.count("WanHuMoImageToVideo") == 1 and kinds.count("AudioEncoderEncode") == 1
    assert "RecordAudio" not in kinds

    outputs = graph_server.outputs(prompt, timeout=600)
    (saved,) = [o for o in outputs.values() if o.get("images") and o.get("animated")]
    item = saved["images"][0]
    video = Decoded(graph_server.output_dir / item["subfolder"] / item["filename"])
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 25
    assert video.frames.std() > 1.0
    assert video.audio is not None
