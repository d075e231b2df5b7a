"""Wan through the server: the frontend's Wan templates converted from their UI format and run end to end.

Random-weight files (see _files_wan.py) are placed under the names the
templates expect; sizes, lengths and step counts are cut to a tiny video
(64x64, 5 frames = 2 latent frames, 2 steps) and the saved file is decoded
back with PyAV.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _files_wan import lora_file, place, transformer_file, umt5_file, vae21_file, vae22_file
from _media import Decoded
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def template(name: str) -> dict:
    spec = importlib.util.find_spec("comfyui_workflow_templates_core")
    if spec is None:
        pytest.skip("comfyui-workflow-templates is not installed")
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "comfyui_workflow_templates_*",
                                   "**", f"{name}.json"), recursive=True)
    if not found:
        pytest.skip(f"the {name} template is not in this comfyui-workflow-templates")
    return json.loads(Path(found[0]).read_text())


def convert(graph_server, name: str) -> dict:
    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": template(name)}).json()
    assert converted["missing_nodes"] == []
    return converted["prompt"]


def shrink(prompt: dict, steps: int = 2) -> dict:
    """Tiny sizes: 64x64, 5 frames, ``steps`` steps (two-pass samplers split them)."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptyHunyuanLatentVideo", "WanImageToVideo", "Wan22ImageToVideoLatent",
                                  "WanFirstLastFrameToVideo", "WanFunInpaintToVideo", "WanVaceToVideo",
                                  "Wan22FunControlToVideo", "WanFunControlToVideo", "WanCameraImageToVideo",
                                  "WanCameraEmbedding"):
            inputs.update(width=64, height=64, length=5)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = steps
        elif node["class_type"] == "KSamplerAdvanced":
            inputs["steps"] = steps
            if not isinstance(inputs.get("end_at_step"), list) and inputs.get("end_at_step", 0) < 1000:
                inputs["end_at_step"] = min(inputs["end_at_step"], steps // 2) \
                    if inputs.get("start_at_step") == 0 else 10000
            if not isinstance(inputs.get("start_at_step"), list) and inputs.get("start_at_step", 0) > 0:
                inputs["start_at_step"] = steps // 2
    return prompt


def saved_video(graph_server, outputs: dict) -> Decoded:
    (saved,) = [o for o in outputs.values() if o.get("images") and o.get("animated")]
    item = saved["images"][0]
    return Decoded(graph_server.output_dir / item["subfolder"] / item["filename"])


def place_common(graph_server, vae: Path) -> None:
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    place(vae, graph_server.models_dir("vae"), vae.name.split("-", 1)[1])


def test_wan21_text_to_video_template(graph_server):
    """text_to_video_wan: Wan 2.1 T2V (bare fp16 file), umt5 (scaled fp8), Wan 2.1 VAE, KSampler, SaveVideo."""
    place_common(graph_server, vae21_file())
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(transformer_file("t2v"), graph_server.models_dir("diffusion_models"), "wan2.1_t2v_1.3B_fp16.safetensors")
    prompt = shrink(convert(graph_server, "text_to_video_wan"))
    video = saved_video(graph_server, graph_server.outputs(prompt))
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16
    assert video.frames.std() > 1.0  # not a blank video


def test_wan22_5b_ti2v_template_with_start_image(graph_server):
    """video_wan2_2_5B_ti2v: the 5B model, the Wan 2.2 VAE, Wan22ImageToVideoLatent with its start image."""
    place_common(graph_server, vae22_file())
    place(vae22_file(), graph_server.models_dir("vae"), "wan2.2_vae.safetensors")
    place(transformer_file("ti2v"), graph_server.models_dir("diffusion_models"), "wan2.2_ti2v_5B_fp16.safetensors")
    prompt = shrink(convert(graph_server, "video_wan2_2_5B_ti2v"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(graph_server.input_dir / "start.png")
    loader = {"class_type": "LoadImage", "inputs": {"image": "start.png"}}
    prompt["9001"] = loader
    (node,) = [n for n in prompt.values() if n["class_type"] == "Wan22ImageToVideoLatent"]
    node["inputs"]["start_image"] = ["9001", 0]
    video = saved_video(graph_server, graph_server.outputs(prompt))
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 24


def test_wan22_14b_two_expert_templates(graph_server):
    """video_wan2_2_14B_t2v / _i2v: high- and low-noise experts (scaled fp8), step-distill LoRAs, two passes."""
    place_common(graph_server, vae21_file())
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    models, loras = graph_server.models_dir("diffusion_models"), graph_server.models_dir("loras")
    for kind, prefix in (("t2v", "wan2.2_t2v"), ("i2v22", "wan2.2_i2v")):
        place(transformer_file(kind, fp8_scaled=True, seed=1), models, f"{prefix}_high_noise_14B_fp8_scaled.safetensors")
        place(transformer_file(kind, fp8_scaled=True, seed=2), models, f"{prefix}_low_noise_14B_fp8_scaled.safetensors")
    for name in ("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise",
                 "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise", "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise"):
        place(lora_file("t2v"), loras, f"{name}.safetensors")
    Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8)).save(
        graph_server.input_dir / "video_wan2_2_14B_i2v_input_image.jpg")
    for name in ("video_wan2_2_14B_t2v", "video_wan2_2_14B_i2v"):
        prompt = shrink(convert(graph_server, name), steps=4)
        video = saved_video(graph_server, graph_server.outputs(prompt))
        assert video.frames.shape == (5, 64, 64, 3)


def test_wan21_vace_template(graph_server):
    """video_wan_vace_14B_t2v: a VACE model (fp16), umt5 fp16, a LoRA on model and CLIP, TrimVideoLatent."""
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(umt5_file(fp8_scaled=False), graph_server.models_dir("text_encoders"), "umt5_xxl_fp16.safetensors")
    place(transformer_file("vace"), graph_server.models_dir("diffusion_models"), "wan2.1_vace_14B_fp16.safetensors")
    place(lora_file("vace"), graph_server.models_dir("loras"), "Wan21_CausVid_14B_T2V_lora_rank32.safetensors")
    prompt = shrink(convert(graph_server, "video_wan_vace_14B_t2v"))
    (vace,) = [n for n in prompt.values() if n["class_type"] == "WanVaceToVideo"]
    vace["inputs"].update(width=64, height=64, length=5)
    video = saved_video(graph_server, graph_server.outputs(prompt))
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 16


def test_first_last_frame_templates(graph_server):
    """video_wan2_2_14B_flf2v (WanFirstLastFrameToVideo, two experts), the 5B and 14B Fun-InP templates."""
    place_common(graph_server, vae22_file())
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(vae22_file(), graph_server.models_dir("vae"), "wan2.2_vae.safetensors")
    models = graph_server.models_dir("diffusion_models")
    place(transformer_file("i2v22", fp8_scaled=True, seed=1), models, "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors")
    place(transformer_file("i2v22", fp8_scaled=True, seed=2), models, "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors")
    place(transformer_file("fun5b"), models, "wan2.2_fun_inpaint_5B_bf16.safetensors")
    place(transformer_file("i2v22", fp8_scaled=True, seed=3), models,
          "wan2.2_fun_inpaint_high_noise_14B_fp8_scaled.safetensors")
    place(transformer_file("i2v22", fp8_scaled=True, seed=4), models,
          "wan2.2_fun_inpaint_low_noise_14B_fp8_scaled.safetensors")
    for name in ("wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise", "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise"):
        place(lora_file("t2v"), graph_server.models_dir("loras"), f"{name}.safetensors")
    rng = np.random.default_rng(1)
    for name in ("video_wan2_2_14B_flf2v_start_image.png", "video_wan2_2_14B_flf2v_end_image.png",
                 "video_wan2_2_5B_fun_inpaint_start_image.png", "video_wan2_2_5B_fun_inpaint_end_image.png",
                 "video_wan2_2_14B_fun_inpaint_start_image.png", "video_wan2_2_14B_fun_inpaint_end_image.png"):
        Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(graph_server.input_dir / name)
    for name, fps in (("video_wan2_2_14B_flf2v", 16), ("video_wan2_2_5B_fun_inpaint", 24),
                      ("video_wan2_2_14B_fun_inpaint", 16)):
        prompt = shrink(convert(graph_server, name), steps=4)
        video = saved_video(graph_server, graph_server.outputs(prompt))
        assert video.frames.shape == (5, 64, 64, 3) and video.fps == fps


def test_fun_control_templates(graph_server):
    """video_wan2_2_14B_fun_control (two experts with ref_conv) and video_wan2_2_5B_fun_control, from a video."""
    from _media import gradient_frames, write_video

    place_common(graph_server, vae22_file())
    place(vae21_file(), graph_server.models_dir("vae"), "wan_2.1_vae.safetensors")
    place(vae22_file(), graph_server.models_dir("vae"), "wan2.2_vae.safetensors")
    models = graph_server.models_dir("diffusion_models")
    place(transformer_file("control22", fp8_scaled=True, seed=1), models,
          "wan2.2_fun_control_high_noise_14B_fp8_scaled.safetensors")
    place(transformer_file("control22", fp8_scaled=True, seed=2), models,
          "wan2.2_fun_control_low_noise_14B_fp8_scaled.safetensors")
    place(transformer_file("control5b"), models, "wan2.2_fun_control_5B_bf16.safetensors")
    frames = gradient_frames(5, 64, 64)
    for name in ("video_wan2_2_14B_fun_control_start_image_control_video.mp4",
                 "video_wan2_2_5B_fun_control_control_video.mp4"):
        write_video(graph_server.input_dir / name, frames, 16)
    for name in ("video_wan2_2_14B_fun_control_start_image.jpg", "video_wan2_2_5B_fun_control_start_image.png"):
        Image.fromarray(frames[0]).save(graph_server.input_dir / name)
    for name in ("video_wan2_2_14B_fun_control", "video_wan2_2_5B_fun_control"):
        prompt = shrink(convert(graph_server, name), steps=4)
        video = saved_video(graph_server, graph_server.outputs(prompt))
        assert video.frames.shape == (5, 64, 64, 3)
