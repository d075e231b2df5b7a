"""LTX-2.3 through the server: the frontend's LTX-2.3 templates converted from their UI format and run end to end.

One random-weight LTX-2.3 checkpoint (_files_ltx2_3.py: the transformer with
its gated connectors, the text projection, the video VAE, the audio VAE with
the bandwidth-extension vocoder) under the templates' dev and distilled names,
_files_ltx2_text's small Gemma with a LoRA for it, _files_ltx2's latent
upsampler and small LoRAs on the transformer. Sizes and steps are cut as for
LTX-2 (test_family_ltx2_server.shrink), the prompt enhancer to a few tokens.
Each saved MP4 is decoded with PyAV: 9 frames of 128x128 and a 48 kHz audio
stream.
"""

from __future__ import annotations

import pytest
from _files_ltx2 import upsampler_file
from _files_ltx2_3 import checkpoint_file, gemma_lora_file
from _files_ltx2_server import lora_file
from _files_ltx2_text import gemma_file
from _files_moge import write_file as write_moge_file
from _files_wan import place
from test_family_hunyuan_video15_server import convert, saved_videos
from test_family_ltx2_server import check_video, image, shrink

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def place_files(graph_server) -> None:
    for name in ("ltx-2.3-22b-dev-fp8.safetensors", "ltx-2.3-22b-distilled-fp8.safetensors"):
        place(checkpoint_file(), graph_server.models_dir("checkpoints"), name)
    place(gemma_file(), graph_server.models_dir("text_encoders"), "gemma_3_12B_it_fp4_mixed.safetensors")
    place(upsampler_file(), graph_server.models_dir("latent_upscale_models"),
          "ltx-2.3-spatial-upscaler-x2-1.1.safetensors")
    place(lora_file(), graph_server.models_dir("loras"),
          "ltx_2.3_22b_distilled_1.1_lora_dynamic_fro09_avg_rank_111_bf16.safetensors")
    place(lora_file(36), graph_server.models_dir("loras"), "ltx2.3-transition.safetensors")
    place(gemma_lora_file(), graph_server.models_dir("loras"), "gemma-3-12b-it-abliterated_lora_rank64_bf16.safetensors")


def run(graph_server, name: str, duration: float | None = None) -> tuple[dict, object]:
    """The template shrunk; its length (duration x rate + 1) made 9 frames, the enhancer's reply 4 tokens; a
    float ``duration`` (seconds) set where the template has one."""
    prompt = shrink(convert(graph_server, name))
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "PrimitiveFloat" and duration is not None:
            inputs["value"] = duration
        elif node["class_type"] == "TextGenerateLTX2Prompt":
            inputs["max_length"] = 4
        elif node["class_type"] == "ComfyMathExpression" and inputs.get("expression") in ("a * b + 1", "a * b"):
            inputs["expression"] = "9"
    (video,) = saved_videos(graph_server, graph_server.outputs(prompt, timeout=900))
    return prompt, video


def kinds(prompt: dict) -> set[str]:
    return {n["class_type"] for n in prompt.values()}


def test_text_to_video_template(graph_server):
    """video_ltx2_3_t2v: the prompt enhancer with the Gemma LoRA, both passes, the 48 kHz audio."""
    place_files(graph_server)
    prompt, video = run(graph_server, "video_ltx2_3_t2v")
    assert {"LTXAVTextEncoderLoader", "LTXVLatentUpsampler", "LoraLoader", "TextGenerateLTX2Prompt"} <= kinds(prompt)
    check_video(graph_server, video, 25)
    assert video.sample_rate == 48000


def test_image_to_video_template(graph_server):
    """video_ltx2_3_i2v: the start image through LTXVPreprocess and LTXVImgToVideoInplace in both passes."""
    place_files(graph_server)
    image(graph_server, "egyptian_queen.png")
    prompt, video = run(graph_server, "video_ltx2_3_i2v")
    assert {"LTXVImgToVideoInplace", "LTXVPreprocess", "LoadImage"} <= kinds(prompt)
    check_video(graph_server, video, 25)


def test_first_last_frame_template(graph_server):
    """video_ltx2_3_flf2v: the distilled checkpoint, first and last frames as LTXVAddGuide guides, Euler
    ancestral with manual sigmas."""
    place_files(graph_server)
    image(graph_server, "high_view_classic_car.png")
    image(graph_server, "low_view_classic_car.png", (160, 96))
    prompt, video = run(graph_server, "video_ltx2_3_flf2v")
    assert {"LTXVAddGuide", "LTXVCropGuides", "SamplerEulerAncestral"} <= kinds(prompt)
    check_video(graph_server, video, 25)


def test_image_and_audio_to_video_template(graph_server):
    """video_ltx2_3_ia2v: a loaded sound trimmed to the clip, encoded by LTXVAudioVAEEncode and kept by
    SetLatentNoiseMask (a zero SolidMask) while the video is generated from the start image."""
    from _media import tones, write_wav

    place_files(graph_server)
    image(graph_server, "cactus_man.png")
    write_wav(graph_server.input_dir / "ltx_23_audio.mp3", tones(44100, 1.0), 44100)
    durations = [n["inputs"].get("value") for n in convert(graph_server, "video_ltx2_3_ia2v").values()
                 if n["class_type"] == "PrimitiveFloat"]
    assert durations == [9]  # the clip's length in seconds, which also trims the sound
    prompt, video = run(graph_server, "video_ltx2_3_ia2v", duration=9 / 24)
    assert {"LoadAudio", "TrimAudioDuration", "LTXVAudioVAEEncode", "SetLatentNoiseMask"} <= kinds(prompt)
    check_video(graph_server, video, 24)


def test_style_transition_template(graph_server):
    """template_ltx2_3_style_transition: the transition LoRA on the distilled checkpoint, first and last frames
    as guides."""
    place_files(graph_server)
    image(graph_server, "ltx23_flf2v_first_frame.png")
    image(graph_server, "ltx23_flf2v_last_frame.png")
    prompt, video = run(graph_server, "template_ltx2_3_style_transition")
    assert "ltx2.3-transition.safetensors" in {n["inputs"].get("lora_name") for n in prompt.values()}
    check_video(graph_server, video, 25)


def test_id_lora_template(graph_server):
    """video_ltx2_3_id_lora: the ID-LoRA on the dev checkpoint, a speaker's clip through LTXVReferenceAudio (its
    tokens in both prompts, identity guidance 3), both passes; the recorder node is bypassed as installed."""
    from _media import tones, write_wav

    place_files(graph_server)
    place(lora_file(), graph_server.models_dir("loras"), "ltx-2.3-id-lora-talkvid-3k.safetensors")
    image(graph_server, "vintage_thinker.png")
    write_wav(graph_server.input_dir / "ltx23_reference_audio.mp3", tones(44100, 0.5), 44100)
    prompt, video = run(graph_server, "video_ltx2_3_id_lora")
    assert {"LTXVReferenceAudio", "LoadAudio", "LoraLoaderModelOnly"} <= kinds(prompt)
    assert "RecordAudio" not in kinds(prompt)
    check_video(graph_server, video, 25)


def test_ic_lora_ingredients_template(graph_server):
    """template_ltx2_3_ic_lora_ingredients: a reference sheet padded to the frame, GetICLoRAParameters reading
    the IC-LoRA's metadata (a downscale factor of 2 here), LTXVAddGuide spreading the half-size guide, KSampler
    on the distilled checkpoint, the guides cropped."""
    place_files(graph_server)
    place(lora_file(downscale=2), graph_server.models_dir("loras"), "ltx-2.3-22b-ic-lora-ingredients-0.9.safetensors")
    image(graph_server, "german_shepherd_news_anchor_ref.png")
    prompt, video = run(graph_server, "template_ltx2_3_ic_lora_ingredients")
    assert {"GetICLoRAParameters", "LTXVAddGuide", "LTXVCropGuides", "ResizeAndPadImage"} <= kinds(prompt)
    guides = [n for n in prompt.values() if n["class_type"] == "LTXVAddGuide"]
    assert guides and all(isinstance(g["inputs"].get("iclora_parameters"), list) for g in guides)
    check_video(graph_server, video, 25)



def test_ic_lora_depth_control_template(graph_server):
    """video_ltx2_3_ic_lora: the control video's frames through MoGe (MoGeInference, MoGeRender's depth) as the
    union-control IC-LoRA's guide, a first-frame image, KSampler on the distilled checkpoint, guides cropped."""
    from _media import gradient_frames, write_video

    place_files(graph_server)
    place(lora_file(downscale=2), graph_server.models_dir("loras"), "ltx-2.3-22b-ic-lora-union-control-ref0.5.safetensors")
    write_moge_file(graph_server.models_dir("geometry_estimation") / "moge_2_vitl_normal_fp16.safetensors")
    write_video(graph_server.input_dir / "stone_ruins.mp4", gradient_frames(12, 96, 160), 24)
    image(graph_server, "the_forgotten_gate.png")
    prompt, video = run(graph_server, "video_ltx2_3_ic_lora")
    assert {"LoadMoGeModel", "MoGeInference", "MoGeRender", "LTXVAddGuide", "GetICLoRAParameters"} <= kinds(prompt)
    check_video(graph_server, video, 25)
