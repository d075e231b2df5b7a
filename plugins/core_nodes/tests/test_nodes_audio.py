"""Audio nodes through the server: real WAV/MP4 inputs, every save format decoded back, the editing nodes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _media import Decoded, dominant_frequency, gradient_frames, tones, write_video, write_wav  # noqa: E402

RATE = 22050
SOUND = tones(RATE, 1.0)
PCM = np.clip(np.round(SOUND * 32767), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def tone(graph_server):
    write_wav(graph_server.input_dir / "tone.wav", SOUND, RATE)
    return "tone.wav"


def _file(graph_server, item: dict) -> Path:
    base = graph_server.output_dir if item["type"] == "output" else graph_server.base / item["type"]
    return base / item["subfolder"] / item["filename"]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def test_load_audio_and_save_every_format(graph_server, tone):
    load = {"class_type": "LoadAudio", "inputs": {"audio": tone}}
    probes, outputs = graph_server.run_with_outputs({
        "1": load,
        "2": {"class_type": "TestProbe", "inputs": {"value": ["1", 0], "name": "loaded"}},
        "3": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "audio/tone"}},
        "4": {"class_type": "SaveAudioMP3", "inputs": {"audio": ["1", 0], "filename_prefix": "audio/tone",
                                                       "quality": "V0"}},
        "5": {"class_type": "SaveAudioOpus", "inputs": {"audio": ["1", 0], "filename_prefix": "audio/tone",
                                                        "quality": "64k"}},
        "6": {"class_type": "SaveAudioAdvanced", "inputs": {"audio": ["1", 0], "filename_prefix": "adv",
                                                            "format": "mp3", "format.quality": "320k"}},
        "7": {"class_type": "SaveAudioAdvanced", "inputs": {"audio": ["1", 0], "filename_prefix": "adv",
                                                            "format": "flac"}},
        "8": {"class_type": "TestProbe", "inputs": {"value": ["7", 0], "name": "passed_on"}},
        "9": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}},
    }, extra_data={"extra_pnginfo": {"workflow": {"id": "w"}}})
    loaded = probes["loaded"]
    assert loaded["sample_rate"] == RATE and loaded["waveform"].shape == (1, 2, RATE)
    assert np.array_equal(loaded["waveform"][0], PCM / 32768.0)
    assert np.array_equal(probes["passed_on"]["waveform"], loaded["waveform"])

    flac = outputs["3"]["audio"][0]
    assert flac == {"filename": "tone_00001_.flac", "subfolder": "audio", "type": "output"}
    decoded = Decoded(_file(graph_server, flac))
    assert decoded.audio_codec == "flac" and decoded.sample_rate == RATE
    assert np.abs(decoded.audio - loaded["waveform"][0]).max() <= 1 / 32768 + 1e-7
    assert json.loads(decoded.metadata["prompt"])["3"]["class_type"] == "SaveAudio"
    assert json.loads(decoded.metadata["workflow"]) == {"id": "w"}

    for node, codec, rate in (("4", "mp3float", RATE), ("5", "opus", 48000), ("6", "mp3float", RATE)):
        item = outputs[node]["audio"][0]
        decoded = Decoded(_file(graph_server, item))
        assert decoded.audio_codec == codec and decoded.sample_rate == rate and decoded.audio.shape[0] == 2
        assert decoded.audio.shape[1] / rate == pytest.approx(1.0, abs=0.08)
        assert dominant_frequency(decoded.audio[0], rate) == pytest.approx(440, abs=3)
        assert dominant_frequency(decoded.audio[1], rate) == pytest.approx(660, abs=3)
        assert _rms(decoded.audio[0]) == pytest.approx(_rms(SOUND[0]), rel=0.1)
    assert outputs["5"]["audio"][0]["filename"] == "tone_00003_.opus"
    assert outputs["6"]["audio"][0]["filename"].endswith(".mp3") and outputs["7"]["audio"][0]["filename"].endswith(".flac")

    preview = outputs["9"]["audio"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    assert Decoded(_file(graph_server, preview)).sample_rate == RATE


def test_editing_nodes(graph_server, tone):
    load = {"class_type": "LoadAudio", "inputs": {"audio": tone}}
    probe = lambda src, name: {"class_type": "TestProbe", "inputs": {"value": src, "name": name}}  # noqa: E731
    probes = graph_server.run({
        "1": load,
        "2": {"class_type": "TrimAudioDuration", "inputs": {"audio": ["1", 0], "start_index": -0.5, "duration": 0.25}},
        "3": probe(["2", 0], "trimmed"),
        "4": {"class_type": "SplitAudioChannels", "inputs": {"audio": ["1", 0]}},
        "5": {"class_type": "JoinAudioChannels", "inputs": {"audio_left": ["4", 1], "audio_right": ["4", 0]}},
        "6": probe(["5", 0], "swapped"),
        "7": {"class_type": "EmptyAudio", "inputs": {"duration": 0.5, "sample_rate": 44100, "channels": 1}},
        "8": {"class_type": "AudioConcat", "inputs": {"audio1": ["1", 0], "audio2": ["7", 0], "direction": "before"}},
        "9": probe(["8", 0], "concat"),
        "10": {"class_type": "AudioMerge", "inputs": {"audio1": ["4", 0], "audio2": ["4", 1], "merge_method": "add"}},
        "11": probe(["10", 0], "merged"),
        "12": {"class_type": "AudioAdjustVolume", "inputs": {"audio": ["1", 0], "volume": -6}},
        "13": probe(["12", 0], "quieter"),
        "14": {"class_type": "AudioDuration", "inputs": {"audio": ["8", 0]}},
        "15": probe(["14", 0], "seconds"),
        "16": probe(["14", 1], "rate"),
        "17": {"class_type": "AudioEqualizer3Band", "inputs": {
            "audio": ["1", 0], "low_gain_dB": 0.0, "low_freq": 100, "mid_gain_dB": 6.0, "mid_freq": 440,
            "mid_q": 10.0, "high_gain_dB": 0.0, "high_freq": 5000}},
        "18": probe(["17", 0], "eq"),
        "19": {"class_type": "EmptyLatentAudio", "inputs": {"seconds": 10.0, "batch_size": 2}},
        "20": probe(["19", 0], "latent"),
    })
    source = PCM / 32768.0
    trimmed = probes["trimmed"]["waveform"][0]
    assert trimmed.shape == (2, round(0.25 * RATE))
    assert np.array_equal(trimmed, source[:, RATE - round(0.5 * RATE):][:, :trimmed.shape[1]])
    assert np.array_equal(probes["swapped"]["waveform"][0], source[::-1])

    concat = probes["concat"]
    assert concat["sample_rate"] == 44100 and concat["waveform"].shape == (1, 2, 22050 + 44100)
    assert not concat["waveform"][0, :, :22050].any()  # the silence first, resampled tone after
    tone_part = concat["waveform"][0, 0, 22050:]
    assert dominant_frequency(tone_part, 44100) == pytest.approx(440, abs=2)
    expected = 0.4 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    assert np.abs(tone_part[200:-200] - expected[200:-200]).max() < 2e-3
    assert probes["seconds"] == pytest.approx(1.5) and probes["rate"] == 44100

    merged = probes["merged"]["waveform"][0, 0]
    assert np.allclose(merged, (source[0] + source[1]) / max(1.0, np.abs(source[0] + source[1]).max()), atol=1e-6)
    assert np.allclose(probes["quieter"]["waveform"], (PCM / 32768.0)[None] * 10 ** (-6 / 20), atol=1e-6)
    eq = probes["eq"]["waveform"][0]
    assert _rms(eq[0, 4000:]) / _rms(source[0, 4000:]) == pytest.approx(2.0, rel=0.05)
    assert _rms(eq[1, 4000:]) / _rms(source[1, 4000:]) == pytest.approx(1.0, abs=0.1)
    assert probes["latent"]["samples"].shape == (2, 64, 216) and probes["latent"]["type"] == "audio"


def test_bad_audio_edits_fail_clearly(graph_server, tone):
    error = graph_server.error({
        "1": {"class_type": "LoadAudio", "inputs": {"audio": tone}},
        "2": {"class_type": "TrimAudioDuration", "inputs": {"audio": ["1", 0], "start_index": 0.5, "duration": 0.0}},
        "3": {"class_type": "TestProbe", "inputs": {"value": ["2", 0], "name": "x"}},
    })
    assert "Start time must be less than end time" in error["exception_message"]
    r = graph_server.server.post("/prompt", json={"prompt": {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "missing.wav"}},
        "2": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}}}})
    assert r.status_code == 400 and "Invalid audio file" in r.text


def test_recorded_and_video_sound(graph_server):
    wav = graph_server.base / "rec.wav"
    write_wav(wav, tones(16000, 0.5, (300.0,)), 16000)
    r = graph_server.server.post("/upload/image", files={"image": ("recording-1.wav", wav.read_bytes(), "audio/wav")},
                                 data={"type": "temp", "subfolder": "audio"})
    assert r.status_code == 200
    write_video(graph_server.input_dir / "talk.mp4", gradient_frames(4, 32, 32), 4, (tones(16000, 1.0), 16000))
    probes = graph_server.run({
        "1": {"class_type": "RecordAudio", "inputs": {"audio": "audio/recording-1.wav [temp]"}},
        "2": {"class_type": "TestProbe", "inputs": {"value": ["1", 0], "name": "recorded"}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": "talk.mp4"}},
        "4": {"class_type": "TestProbe", "inputs": {"value": ["3", 0], "name": "soundtrack"}},
    })
    assert probes["recorded"]["sample_rate"] == 16000 and probes["recorded"]["waveform"].shape == (1, 1, 8000)
    assert dominant_frequency(probes["recorded"]["waveform"][0, 0], 16000) == pytest.approx(300, abs=3)
    track = probes["soundtrack"]
    assert track["sample_rate"] == 16000 and track["waveform"].shape[1] == 2
    assert dominant_frequency(track["waveform"][0, 1], 16000) == pytest.approx(660, abs=3)
    options = graph_server.server.get("/object_info/LoadAudio").json()["LoadAudio"]["input"]["required"]["audio"]
    assert {"tone.wav", "talk.mp4"} <= set(options[0]) and options[1] == {"audio_upload": True}


def test_executed_message_carries_the_audio_player(graph_server, tone):
    from tests.e2e.execution_helpers import Client

    client = Client(graph_server.server)
    try:
        result = client.run({"1": {"class_type": "LoadAudio", "inputs": {"audio": tone}},
                             "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "ws"}}})
    finally:
        client.close()
    (executed,) = [m for m in result.events("executed") if m["node"] == "2"]
    assert executed["output"] == {"audio": [{"filename": "ws_00001_.flac", "subfolder": "", "type": "output"}]}
    view = graph_server.server.get("/view", params={"filename": "ws_00001_.flac", "type": "output"})
    assert view.status_code == 200 and view.headers["content-type"] == "audio/flac"


def test_conditioning_stable_audio(graph_server):
    probes = graph_server.run({
        "1": {"class_type": "TestConditioning", "inputs": {"value": 0.5, "tokens": 4}},
        "2": {"class_type": "ConditioningStableAudio", "inputs": {"positive": ["1", 0], "negative": ["1", 0],
                                                                  "seconds_start": 1.5, "seconds_total": 30.0}},
        "3": {"class_type": "TestProbe", "inputs": {"value": ["2", 0], "name": "positive"}},
        "4": {"class_type": "TestProbe", "inputs": {"value": ["2", 1], "name": "negative"}},
    })
    for side in ("positive", "negative"):
        (entry,) = probes[side]
        assert entry["shape"] == [1, 4, 768]
        assert entry["options"]["seconds_start"] == 1.5 and entry["options"]["seconds_total"] == 30.0
        assert entry["options"]["pooled_output"]["mean"] == 0.5


def test_resample_keeps_tones_and_lengths():
    import torch

    from comfy_kernel_core_nodes.media.audio import opus_rate, resample

    wave = torch.from_numpy(tones(8000, 0.5, (300.0,)))
    up = resample(wave, 8000, 44100)
    assert up.shape == (1, int(np.ceil(44100 * 4000 / 8000)))
    expected = 0.4 * np.sin(2 * np.pi * 300 * np.arange(up.shape[1]) / 44100)
    assert np.abs(up[0, 300:-300].numpy() - expected[300:-300]).max() < 2e-3
    down = resample(up, 44100, 8000)
    assert down.shape == wave.shape and torch.allclose(down[:, 100:-100], wave[:, 100:-100], atol=2e-3)
    assert resample(wave, 8000, 8000) is wave
    assert [opus_rate(r) for r in (8000, 11025, 22050, 44100, 96000)] == [8000, 12000, 24000, 48000, 48000]
