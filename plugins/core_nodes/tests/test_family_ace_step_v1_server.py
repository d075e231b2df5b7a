"""ACE-Step 1.0's workflow templates through the server: converted, validated, run, the saved audio decoded.

The small all-in-one checkpoint (_files_ace_step_v1.py) sits in ``checkpoints``
under the templates' name. Each template is shrunk to 1 second of audio (10
latent frames) and 2 sampling steps; the saved FLAC / MP3 is decoded back
with PyAV: stereo, 44.1 kHz, the latent's length in samples, not silent.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_ace_step_v1 import checkpoint_file
from _files_qwen import place
from _media import tones, write_wav
from _templates import template
from test_family_ace_step_server import _converted, _saved_audio

pytestmark = pytest.mark.slow

SECONDS = 1.0
FRAMES = int(SECONDS * 44100 / 512 / 8)  # 10 latent frames, 4096 samples each


@pytest.fixture(scope="module")
def server(graph_server):
    place(checkpoint_file(), graph_server.models_dir("checkpoints"), "ace_step_v1_3.5b.safetensors")
    yield graph_server


def _shrunk(prompt: dict) -> dict:
    for node in prompt.values():
        if node["class_type"] == "EmptyAceStepLatentAudio":
            node["inputs"]["seconds"] = SECONDS
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return prompt


def _check(server, entry: dict, samples: int) -> None:
    (song,) = _saved_audio(server, entry)
    assert song.sample_rate == 44100 and song.audio.shape[0] == 2
    assert abs(song.audio.shape[1] - samples) <= 2 * 1152  # MP3 adds at most a frame or two
    assert np.isfinite(song.audio).all() and np.abs(song.audio).max() > 1e-4


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["audio_ace_step_1_t2a_song", "audio_ace_step_1_t2a_instrumentals"])
def test_text_to_audio_template(server, name):
    prompt = _shrunk(_converted(server, template(name)))
    types = {n["class_type"] for n in prompt.values()}
    assert {"TextEncodeAceStepAudio", "EmptyAceStepLatentAudio", "CheckpointLoaderSimple", "VAEDecodeAudio"} <= types
    entry = server.wait(server.queue(prompt), timeout=900)
    _check(server, entry, FRAMES * 4096)


@pytest.mark.timeout(900)
def test_music_to_music_editing_template(server):
    """audio_ace_step_1_m2m_editing: LoadAudio (48 kHz here), VAEEncodeAudio (resampled to 44.1 kHz), KSampler
    at denoise 0.3."""
    write_wav(server.input_dir / "audio_ace_step_1_m2m_editing_input_audio.mp3", tones(48000, 1.0), 48000)
    prompt = _shrunk(_converted(server, template("audio_ace_step_1_m2m_editing")))
    assert {"LoadAudio", "VAEEncodeAudio"} <= {n["class_type"] for n in prompt.values()}
    entry = server.wait(server.queue(prompt), timeout=900)
    # 1 s resampled to 44.1 kHz, cut to whole latent frames (10 x 4096 samples) as ComfyUI's VAE encode does
    _check(server, entry, 44100 // 4096 * 4096)
