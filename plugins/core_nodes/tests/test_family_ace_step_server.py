"""ACE-Step 1.5's workflow templates through the server: converted, validated, run, the saved audio decoded.

Random-weight files (see _files_ace_step.py) sit in the model folders under
the names the templates load. Each template is converted by the server's
converter and shrunk to 2 seconds of audio and 2 sampling steps (the
language model then writes 10 audio codes); the saved MP3 / FLAC is decoded
back with PyAV: stereo, 48 kHz, 2 seconds, not silent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from _files_ace_step import checkpoint, dit, dit_xl, language_model, text_encoder, vae
from _files_qwen import place
from _templates import template

sys.path.insert(0, str(Path(__file__).parent))
from _media import Decoded, tones, write_wav  # noqa: E402

pytestmark = pytest.mark.slow

SECONDS = 2.0
TEMPLATES = ["audio_ace_step_1_5_split", "audio_ace_step_1_5_split_4b", "audio_ace_step_1_5_checkpoint",
             "audio_ace_step1_5_xl_turbo", "audio_ace_step1_5_xl_base", "audio_ace_step1_5_xl_sft"]


@pytest.fixture(scope="module")
def server(graph_server):
    models = graph_server.models_dir
    place(dit(), models("diffusion_models"), "acestep_v1.5_turbo.safetensors")
    for name in ("acestep_v1.5_xl_turbo_bf16", "acestep_v1.5_xl_base_bf16", "acestep_v1.5_xl_sft_bf16"):
        place(dit_xl(), models("diffusion_models"), f"{name}.safetensors")
    place(text_encoder(), models("text_encoders"), "qwen_0.6b_ace15.safetensors")
    for name in ("qwen_1.7b_ace15", "qwen_4b_ace15"):
        place(language_model(), models("text_encoders"), f"{name}.safetensors")
    place(vae(), models("vae"), "ace_1.5_vae.safetensors")
    place(checkpoint(), models("checkpoints"), "ace_step_1.5_turbo_aio.safetensors")
    yield graph_server


@pytest.fixture(autouse=True)
def free_models(server):
    yield
    server.server.post("/free", json={"unload_models": True, "free_memory": True})


def _converted(server, workflow: dict, missing: list[str] | None = None) -> dict:
    r = server.server.post("/api/workflows/convert", json={"workflow": workflow})
    assert r.status_code == 200, r.text
    converted = r.json()
    assert converted["missing_nodes"] == (missing or [])
    return converted["prompt"]


def _shrunk(prompt: dict, seconds: float = SECONDS) -> dict:
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyAceStep1.5LatentAudio":
            inputs["seconds"] = seconds
        elif node["class_type"] == "TextEncodeAceStepAudio1.5":
            inputs["duration"] = seconds
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 2
    return prompt


def _saved_audio(server, entry: dict) -> list[Decoded]:
    out = []
    for output in entry["outputs"].values():
        for item in output.get("audio", []):
            folder = server.output_dir if item["type"] == "output" else server.base / item["type"]
            out.append(Decoded(folder / item["subfolder"] / item["filename"]))
    return out


def _check_song(decoded: list[Decoded], seconds: float = SECONDS) -> None:
    assert len(decoded) == 1
    song = decoded[0]
    assert song.sample_rate == 48000 and song.audio.shape[0] == 2
    assert song.audio.shape[1] / 48000 == pytest.approx(seconds, abs=0.08)  # MP3 adds at most a frame or two
    assert np.isfinite(song.audio).all() and np.abs(song.audio).max() > 1e-3


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_runs_and_saves_a_song(server, name):
    prompt = _shrunk(_converted(server, template(name)))
    types = {n["class_type"] for n in prompt.values()}
    assert {"TextEncodeAceStepAudio1.5", "EmptyAceStep1.5LatentAudio", "VAEDecodeAudio"} <= types
    encoder = next(n["inputs"] for n in prompt.values() if n["class_type"] == "TextEncodeAceStepAudio1.5")
    assert encoder["generate_audio_codes"] is True and encoder["language"] == "en"
    entry = server.wait(server.queue(prompt), timeout=1200)
    _check_song(_saved_audio(server, entry))


@pytest.mark.timeout(1200)
def test_template_past_the_reference_length(server):
    """The checkpoint template at 40 s: the language model writes 200 codes, the DiT attends over 500
    patches (its sliding window is 128) and the timbre reference, cut to 750 frames (30 s), is padded back
    to the song's 1000 frames with silence. (The shipped 120 s run the same way, in about 7 minutes here.)"""
    prompt = _shrunk(_converted(server, template("audio_ace_step_1_5_checkpoint")), seconds=40.0)
    entry = server.wait(server.queue(prompt), timeout=1200)
    _check_song(_saved_audio(server, entry), seconds=40.0)


@pytest.mark.timeout(1200)
def test_llm_template_runs_with_its_plan_given(server):
    """audio_ace_step_1_5_split_llm asks Gemini (a paid API node, not served here) for tags and lyrics; the rest
    of the graph validates and runs with that node's text put in its place."""
    prompt = _converted(server, template("audio_ace_step_1_5_split_llm"), missing=["GeminiNodeV2"])
    gemini = [key for key, node in prompt.items() if node["class_type"] == "GeminiNodeV2"]
    assert len(gemini) == 1
    prompt[gemini[0]] = {"class_type": "PrimitiveStringMultiline", "inputs": {
        "value": "delta blues, slide guitar, harmonica\n---\n[Verse]\nI woke up this mornin'"}}
    entry = server.wait(server.queue(_shrunk(prompt)), timeout=1200)
    _check_song(_saved_audio(server, entry))


@pytest.mark.timeout(1200)
def test_audio_round_trip_through_the_vae(server):
    """VAEEncodeAudio resamples to the VAE's 48 kHz and gives 25 latent frames a second; VAEDecodeAudio
    brings 48 kHz stereo back."""
    write_wav(server.input_dir / "ace_tone.wav", tones(22050, 1.0), 22050)
    prompt = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "ace_1.5_vae.safetensors"}},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": "ace_tone.wav"}},
        "3": {"class_type": "VAEEncodeAudio", "inputs": {"audio": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
        "5": {"class_type": "TestProbe", "inputs": {"value": ["3", 0], "name": "latent"}},
        "6": {"class_type": "TestProbe", "inputs": {"value": ["4", 0], "name": "audio"}},
    }
    recorded = server.run(prompt, timeout=600)
    assert recorded["latent"]["samples"].shape == (1, 64, 25)
    audio = recorded["audio"]
    assert audio["waveform"].shape == (1, 2, 48000) and audio["sample_rate"] == 48000


@pytest.mark.timeout(1200)
def test_reference_audio_drives_a_cover(server):
    """ReferenceTimbreAudio puts an encoded song on the positive conditioning: the model then takes it as the
    timbre reference and, through its audio tokenizer, as the source (no audio codes needed)."""
    write_wav(server.input_dir / "ace_reference.wav", tones(48000, SECONDS), 48000)
    encode = {"clip": ["2", 0], "tags": "cover", "lyrics": "", "seed": 1, "bpm": 100, "duration": SECONDS,
              "timesignature": "4", "language": "en", "keyscale": "A minor", "generate_audio_codes": False,
              "cfg_scale": 2.0, "temperature": 0.85, "top_p": 0.9, "top_k": 0, "min_p": 0.0}
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "acestep_v1.5_turbo.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "qwen_0.6b_ace15.safetensors",
                                                         "clip_name2": "qwen_1.7b_ace15.safetensors",
                                                         "type": "ace", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ace_1.5_vae.safetensors"}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": "ace_reference.wav"}},
        "5": {"class_type": "VAEEncodeAudio", "inputs": {"audio": ["4", 0], "vae": ["3", 0]}},
        "6": {"class_type": "TextEncodeAceStepAudio1.5", "inputs": encode},
        "7": {"class_type": "ReferenceTimbreAudio", "inputs": {"conditioning": ["6", 0], "latent": ["5", 0]}},
        "8": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}},
        "9": {"class_type": "EmptyAceStep1.5LatentAudio", "inputs": {"seconds": SECONDS, "batch_size": 1}},
        "10": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["7", 0], "negative": ["8", 0], "latent_image": ["9", 0], "seed": 3,
            "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "11": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["10", 0], "vae": ["3", 0]}},
        "12": {"class_type": "TestProbe", "inputs": {"value": ["7", 0], "name": "cond"}},
        "13": {"class_type": "TestProbe", "inputs": {"value": ["11", 0], "name": "audio"}},
        "14": {"class_type": "TestProbe", "inputs": {"value": ["6", 0], "name": "plain"}},
    }
    recorded = server.run(prompt, timeout=1200)
    options = recorded["cond"][0]["options"]
    assert "reference_audio_timbre_latents" in options and "audio_codes" not in options
    assert "reference_audio_timbre_latents" not in recorded["plain"][0]["options"]
    audio = recorded["audio"]
    assert audio["waveform"].shape == (1, 2, 96000) and np.isfinite(audio["waveform"]).all()
