"""InfiniteTalk through the server: the ``video_wan2_1_infinitetalk`` template converted from its UI format
and run.

Random-weight files (``_files_wan_infinitetalk.py``, ``_files_wan.py``) are
placed under the names the template expects: the Wan 2.1 I2V model, the
InfiniteTalk patch, a wav2vec2 base encoder, umt5, the Wan 2.1 VAE and a
LoRA. Both generations (the first clip, then its extension from the last
frame of it) are cut to 64x64 and 5 frames with two steps; the two speakers'
sounds and the start image are written to the input folder (the masks come
from the template's Painter nodes, empty). The saved videos are decoded back
with PyAV.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_wan import place, umt5_file, vae21_file
from _files_wan_infinitetalk import lora_file, patch_file, wan_file, wav2vec2_base_file
from _media import Decoded, tones, write_wav
from _templates import template
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

NAME = "video_wan2_1_infinitetalk"


def shrink(prompt: dict) -> dict:
    """64x64 clips of 5 frames, one motion frame, two steps."""
    for node in prompt.values():
        if node["class_type"] == "WanInfiniteTalkToVideo":
            node["inputs"].update(width=64, height=64, length=5, motion_frame_count=1)
        elif node["class_type"] == "BasicScheduler":
            node["inputs"]["steps"] = 2
    return prompt


def test_infinitetalk_template_runs_end_to_end(graph_server) -> None:
    models = graph_server.models_dir
    place(wan_file(), models("diffusion_models"), "Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors")
    place(patch_file(), models("model_patches"), "wan2.1_infiniteTalk_multi_fp16.safetensors")
    place(wav2vec2_base_file(), models("audio_encoders"), "wav2vec2-chinese-base_fp16.safetensors")
    place(umt5_file(), models("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae21_file(), models("vae"), "Wan2_1_VAE_bf16.safetensors")
    place(lora_file(), models("loras"), "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors")
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(
        graph_server.input_dir / "two_character_talking.png")
    write_wav(graph_server.input_dir / "audio_speaker1_woman.mp3", tones(16000, 0.4, (300.0,)), 16000)
    write_wav(graph_server.input_dir / "audio_speaker2_man.mp3", tones(16000, 0.3, (180.0,)), 16000)

    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": template(NAME)}).json()
    assert converted["missing_nodes"] == []
    prompt = shrink(converted["prompt"])
    kinds = sorted(n["class_type"] for n in prompt.values())
    assert kinds.count("WanInfiniteTalkToVideo") == 2 and kinds.count("ModelPatchLoader") == 2

    outputs = graph_server.outputs(prompt, timeout=600)
    saved = [o for o in outputs.values() if o.get("images") and o.get("animated")]
    assert len(saved) == 2
    lengths = []
    for output in saved:
        item = output["images"][0]
        video = Decoded(graph_server.output_dir / item["subfolder"] / item["filename"])
        assert video.frames.shape[1:] == (64, 64, 3) and video.fps == 25
        assert video.frames.std() > 1.0
        lengths.append(video.frames.shape[0])
    # the first clip, and the first clip batched with the whole extension (the template leaves trim_image unused)
    assert sorted(lengths) == [5, 10]
