"""LTX-2 through the server: the frontend's LTX-2 templates converted from their UI format and run end to end.

One random-weight checkpoint (_files_ltx2_server.py) holds everything the
templates read from it: the transformer, the text projection and connectors,
the video VAE, the audio VAE and vocoder. Gemma 3 is _files_ltx2_text's small
one, the latent upsampler _files_ltx2's, the distilled LoRA a small LoRA on
the transformer; each is placed under the name the templates load. Sizes are
cut to 9 frames at 64x64 for the first pass (128x128 after the x2 latent
upsampler), one or two steps a pass. The saved video is decoded with PyAV:
its frames and its audio stream.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_lotus import place_lotus_depth_files
from _files_ltx2 import upsampler_file
from _files_ltx2_server import checkpoint_file, lora_file
from _files_ltx2_text import gemma_file
from _files_wan import place
from _media import write_video
from PIL import Image
from test_family_hunyuan_video15_server import convert, saved_videos
from test_family_wan_server import template

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

FULL = 128  # the second pass's size; the first samples half of it
FRAMES = 9
SIZES = (704, 720, 1088, 1280, 1920)  # the templates' widths and heights


def shrink(prompt: dict) -> dict:
    """The templates' sizes and step counts cut: 128x128 for the full size, 9 frames, 2 scheduled steps, every
    manual sigma list reduced to its first sigma and 0, MoGe's fewest tokens."""
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "EmptyImage":
            inputs.update(width=FULL, height=FULL)
        elif kind == "ResizeImageMaskNode" and "resize_type.width" in inputs:
            inputs.update({"resize_type.width": FULL, "resize_type.height": FULL})
        elif kind == "ResizeImageMaskNode" and "resize_type.longer_size" in inputs:
            inputs["resize_type.longer_size"] = FULL
        elif kind == "PrimitiveInt" and inputs.get("value") in SIZES:
            inputs["value"] = FULL
        elif kind == "ResizeAndPadImage":
            inputs.update(target_width=FULL, target_height=FULL)
        elif kind == "PrimitiveInt" and isinstance(inputs.get("value"), int) and inputs["value"] > 30:
            # frame counts, not frame rates
            inputs["value"] = FRAMES
        elif kind in ("EmptyLTXVLatentVideo", "LTXVEmptyLatentAudio"):
            for key, value in (("width", FULL // 2), ("height", FULL // 2), ("length", FRAMES),
                               ("frames_number", FRAMES)):
                if not isinstance(inputs.get(key, []), list):
                    inputs[key] = value
        elif kind == "LTXVScheduler":
            inputs["steps"] = 2
        elif kind == "MoGeInference":
            inputs["resolution_level"] = 0
        elif kind == "ManualSigmas":
            inputs["sigmas"] = f"{inputs['sigmas'].split(',')[0].strip()}, 0.0"
    return prompt


def place_files(graph_server, checkpoint: str) -> None:
    place(checkpoint_file(), graph_server.models_dir("checkpoints"), checkpoint)
    place(gemma_file(), graph_server.models_dir("text_encoders"), "gemma_3_12B_it_fp4_mixed.safetensors")
    place(upsampler_file(), graph_server.models_dir("latent_upscale_models"),
          "ltx-2-spatial-upscaler-x2-1.0.safetensors")
    place(lora_file(), graph_server.models_dir("loras"), "ltx-2-19b-distilled-lora-384.safetensors")


def run(graph_server, name: str) -> tuple[dict, object]:
    prompt = shrink(convert(graph_server, name))
    (video,) = saved_videos(graph_server, graph_server.outputs(prompt, timeout=900))
    return prompt, video


def check_video(graph_server, video, fps: int) -> None:
    """9 frames of the full size at ``fps``, not blank, with an audio stream at least half the video's length
    and not silent; every LoRA key the server was given reached the model."""
    log = graph_server.server.log()
    assert "lora key not loaded" not in log and "NOT LOADED" not in log
    assert video.frames.shape == (FRAMES, FULL, FULL, 3) and video.fps == fps
    assert video.frames.std() > 1.0  # not blank
    assert video.audio is not None and video.sample_rate > 0
    assert video.audio.shape[-1] > 0.5 * FRAMES / fps * video.sample_rate and np.isfinite(video.audio).all()
    assert np.abs(video.audio).max() > 0


def test_text_to_video_template(graph_server):
    """video_ltx2_t2v: CheckpointLoaderSimple, LTXAVTextEncoderLoader (Gemma 3 + the checkpoint's connectors),
    LTXVAudioVAELoader, the distilled LoRA, a first pass at half size, LTXVLatentUpsampler, a second pass,
    VAEDecodeTiled, LTXVAudioVAEDecode, CreateVideo, SaveVideo."""
    place_files(graph_server, "ltx-2-19b-dev-fp8.safetensors")
    prompt, video = run(graph_server, "video_ltx2_t2v")
    assert {"LTXAVTextEncoderLoader", "LTXVLatentUpsampler", "LoraLoaderModelOnly", "LTXVAudioVAEDecode"} <= \
        {n["class_type"] for n in prompt.values()}
    check_video(graph_server, video, 24)


def image(graph_server, name: str, size: tuple[int, int] = (96, 160)) -> None:
    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(graph_server.input_dir / name)


def test_image_to_video_template(graph_server):
    """video_ltx2_i2v: the start image resized, LTXVPreprocess (H.264 round trip) and LTXVImgToVideoInplace
    in both passes."""
    place_files(graph_server, "ltx-2-19b-dev-fp8.safetensors")
    image(graph_server, "freckled_curly_girl.png")
    prompt, video = run(graph_server, "video_ltx2_i2v")
    assert {"LTXVPreprocess", "LTXVImgToVideoInplace", "LoadImage"} <= {n["class_type"] for n in prompt.values()}
    check_video(graph_server, video, 25)


def test_distilled_text_to_video_template(graph_server):
    """video_ltx2_t2v_distilled: the distilled checkpoint with manual sigmas in both passes, no LoRA."""
    place_files(graph_server, "ltx-2-19b-distilled.safetensors")
    prompt, video = run(graph_server, "video_ltx2_t2v_distilled")
    assert "LoraLoaderModelOnly" not in {n["class_type"] for n in prompt.values()}
    check_video(graph_server, video, 24)


def test_distilled_image_to_video_template(graph_server):
    """video_ltx2_i2v_distilled: the distilled checkpoint, a zeroed negative prompt, the start image."""
    place_files(graph_server, "ltx-2-19b-distilled.safetensors")
    image(graph_server, "snow_bike_jump_crew.png")
    prompt, video = run(graph_server, "video_ltx2_i2v_distilled")
    assert {"ConditioningZeroOut", "LTXVImgToVideoInplace"} <= {n["class_type"] for n in prompt.values()}
    check_video(graph_server, video, 25)


def with_video_output(workflow: dict) -> dict:
    """video_ltx2_i2v_lora with its subgraph's VIDEO output linked to the subgraph's CreateVideo: the template's
    output names link 265, which its subgraph does not have (CreateVideo's output has no links), so as
    installed SaveVideo gets no video."""
    (subgraph,) = workflow["definitions"]["subgraphs"]
    (output,) = subgraph["outputs"]
    (create,) = [n for n in subgraph["nodes"] if n["type"] == "CreateVideo"]
    link = output["linkIds"][0]
    assert all(item["id"] != link for item in subgraph["links"]) and not create["outputs"][0]["links"]
    subgraph["links"].append({"id": link, "origin_id": create["id"], "origin_slot": 0,
                              "target_id": subgraph["outputNode"]["id"], "target_slot": 0, "type": "VIDEO"})
    create["outputs"][0]["links"] = [link]
    return workflow


def test_image_to_video_lora_template(graph_server):
    """video_ltx2_i2v_lora: a style LoRA beside the distilled one in each pass, ImageScaleToMaxDimension, a
    square start image; the template's Gemma file name (``gemma_3_12B_it``). Run with its missing output link
    restored."""
    place_files(graph_server, "ltx-2-19b-dev.safetensors")
    place(gemma_file(), graph_server.models_dir("text_encoders"), "gemma_3_12B_it.safetensors")
    place(lora_file(33), graph_server.models_dir("loras"), "ltx2-squish.safetensors")
    image(graph_server, "puppy_with_blue_bandana.png")
    name = "video_ltx2_i2v_lora"
    (save,) = [n for n in convert(graph_server, name).values() if n["class_type"] == "SaveVideo"]
    assert "video" not in save["inputs"]
    workflow = with_video_output(template(name))
    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": workflow}).json()
    prompt = shrink(converted["prompt"])
    (video,) = saved_videos(graph_server, graph_server.outputs(prompt, timeout=900))
    loras = [n["inputs"]["lora_name"] for n in prompt.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert loras.count("ltx2-squish.safetensors") == 2
    check_video(graph_server, video, 24)


def control_video(graph_server, name: str) -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (12, 96, 160, 3), dtype=np.uint8)
    write_video(graph_server.input_dir / name, frames, 24)


def test_canny_to_video_template(graph_server):
    """video_ltx2_canny_to_video: the control video's frames through Canny, LTXVAddGuide with the canny IC-LoRA,
    the first frame by LTXVImgToVideoInplace, LTXVCropGuides before the second pass."""
    place_files(graph_server, "ltx-2-19b-dev-fp8.safetensors")
    place(checkpoint_file(), graph_server.models_dir("checkpoints"), "ltx-2-19b-distilled.safetensors")
    place(lora_file(34), graph_server.models_dir("loras"), "ltx-2-19b-ic-lora-canny-control.safetensors")
    control_video(graph_server, "squirrel_in_flower_garden.mp4")
    image(graph_server, "ltx_2_canny_1st_frame.png")
    prompt, video = run(graph_server, "video_ltx2_canny_to_video")
    assert {"Canny", "LTXVAddGuide", "LTXVCropGuides", "LoadVideo"} <= {n["class_type"] for n in prompt.values()}
    check_video(graph_server, video, 24)


def test_depth_to_video_template(graph_server):
    """video_ltx2_depth_to_video: depth maps from Lotus (UNETLoader, the SD VAE, LotusConditioning,
    SetFirstSigma, ImageInvert) as LTXVAddGuide's guide with the depth IC-LoRA."""
    place_files(graph_server, "ltx-2-19b-dev-fp8.safetensors")
    place(lora_file(35), graph_server.models_dir("loras"), "ltx-2-19b-ic-lora-depth-control.safetensors")
    place_lotus_depth_files(graph_server.models_dir)
    control_video(graph_server, "minimalist_sky_view_lounge.mp4")
    image(graph_server, "minimalist_sky_view_lounge.png")
    prompt, video = run(graph_server, "video_ltx2_depth_to_video")
    assert {"LotusConditioning", "LTXVAddGuide", "ImageInvert"} <= {n["class_type"] for n in prompt.values()}
    check_video(graph_server, video, 24)
