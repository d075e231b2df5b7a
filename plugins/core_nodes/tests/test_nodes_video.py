"""Video nodes through the server: real files written with PyAV, loaded, edited, saved and decoded back."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _media import Decoded, dominant_frequency, gradient_frames, tones, write_video  # noqa: E402

FPS = 8
FRAMES = gradient_frames(8, 48, 64)
RATE = 16000
SOUND = tones(RATE, 1.0)


@pytest.fixture(scope="module")
def clip(graph_server):
    """An 8-frame, 1 s H.264 + AAC clip in the server's input folder."""
    write_video(graph_server.input_dir / "clip.mp4", FRAMES, FPS, (SOUND, RATE), metadata={"comment": "source"})
    return "clip.mp4"


def _saved(graph_server, output: dict) -> Path:
    item = output["images"][0]
    assert output["animated"] == [True]
    folder = {"output": graph_server.output_dir, "temp": graph_server.base / "temp"}[item["type"]]
    return folder / item["subfolder"] / item["filename"]


def test_load_split_and_resave_a_video(graph_server, clip):
    probes, outputs = graph_server.run_with_outputs({
        "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "TestProbe", "inputs": {"value": ["2", 0], "name": "images"}},
        "4": {"class_type": "TestProbe", "inputs": {"value": ["2", 1], "name": "audio"}},
        "5": {"class_type": "TestProbe", "inputs": {"value": ["2", 2], "name": "fps"}},
        "6": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "video/copy",
                                                    "format": "auto", "codec": "auto"}},
    }, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    images = probes["images"]
    assert images.shape == (8, 48, 64, 3) and images.dtype == np.float32
    assert np.abs(images * 255 - FRAMES).mean() < 2.0  # H.264 at crf 12 keeps the gradient
    assert probes["fps"] == 8.0
    audio = probes["audio"]
    assert audio["sample_rate"] == RATE and audio["waveform"].shape[:2] == (1, 2)
    assert abs(audio["waveform"].shape[2] - RATE) < 2048  # AAC pads to whole frames
    assert dominant_frequency(audio["waveform"][0, 0], RATE) == pytest.approx(440, abs=2)
    assert dominant_frequency(audio["waveform"][0, 1], RATE) == pytest.approx(660, abs=2)

    saved = outputs["6"]
    assert saved["images"][0]["subfolder"] == "video" and saved["images"][0]["filename"] == "copy_00001_.mp4"
    copy = Decoded(_saved(graph_server, saved))
    source = Decoded(graph_server.input_dir / clip)
    assert copy.video_codec == "h264" and copy.fps == FPS and copy.frames.shape == (8, 48, 64, 3)
    assert np.array_equal(copy.frames, source.frames)  # the streams were copied, not re-encoded
    assert copy.metadata["comment"] == "source"
    assert json.loads(copy.metadata["workflow"]) == {"nodes": []}
    assert json.loads(copy.metadata["prompt"])["6"]["class_type"] == "SaveVideo"


def test_create_trim_and_encode_a_video(graph_server, clip):
    probes, outputs = graph_server.run_with_outputs({
        "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 4.0, "audio": ["2", 1],
                                                      "bit_depth": "auto"}},  # newer ComfyUI input: ignored
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "made",
                                                    "format": "mp4", "codec": "h264"}},
        "5": {"class_type": "Video Slice", "inputs": {"video": ["1", 0], "start_time": 0.25, "duration": 0.5,
                                                      "strict_duration": True}},
        "6": {"class_type": "GetVideoComponents", "inputs": {"video": ["5", 0]}},
        "7": {"class_type": "TestProbe", "inputs": {"value": ["6", 0], "name": "sliced"}},
        "8": {"class_type": "TestProbe", "inputs": {"value": ["6", 1], "name": "sliced_audio"}},
        "9": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": "sliced",
                                                    "format": "auto", "codec": "auto"}},
        "10": {"class_type": "Video Slice", "inputs": {"video": ["3", 0], "start_time": -1.0, "duration": 0.0,
                                                       "strict_duration": False}},
        "11": {"class_type": "GetVideoComponents", "inputs": {"video": ["10", 0]}},
        "12": {"class_type": "TestProbe", "inputs": {"value": ["11", 0], "name": "tail"}},
    })
    made = Decoded(_saved(graph_server, outputs["4"]))
    assert made.fps == 4 and made.frames.shape == (8, 48, 64, 3) and made.duration == pytest.approx(2.0, abs=0.1)
    assert np.abs(made.frames.astype(float) - FRAMES).mean() < 3.0
    assert made.audio_codec == "aac" and made.sample_rate == RATE
    # CreateVideo keeps the sound only as long as the frames last: 1 s of tone in 2 s of video
    assert made.audio.shape[1] == pytest.approx(RATE, abs=2048)

    assert probes["sliced"].shape == (4, 48, 64, 3)  # frames at 0.25, 0.375, 0.5, 0.625 s
    assert np.abs(probes["sliced"] * 255 - FRAMES[2:6]).mean() < 2.0
    assert probes["sliced_audio"]["waveform"].shape[2] == RATE // 2
    sliced = Decoded(_saved(graph_server, outputs["9"]))
    assert sliced.frames.shape[0] == 4 and sliced.fps == FPS
    assert sliced.duration == pytest.approx(0.5, abs=0.1)
    assert probes["tail"].shape[0] == 4  # the last second of a 2 s, 4 fps video


def test_save_webm_vp9_and_av1(graph_server):
    _, outputs = graph_server.run_with_outputs({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 6, "color": 0x2080C0}},
        "2": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "clip", "codec": "vp9",
                                                   "fps": 12.0, "crf": 20.0}},
        "3": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "clip", "codec": "av1",
                                                   "fps": 6.0, "crf": 30.0}},
    })
    names = sorted(outputs[n]["images"][0]["filename"] for n in ("2", "3"))
    assert names == ["clip_00001_.webm", "clip_00002_.webm"]
    for node, codec, fps in (("2", "vp9", 12), ("3", "libdav1d", 6)):
        decoded = Decoded(_saved(graph_server, outputs[node]))
        assert decoded.format == "matroska,webm" and decoded.fps == fps
        assert decoded.video_codec == codec
        assert decoded.frames.shape == (6, 64, 64, 3)
        assert np.abs(decoded.frames.astype(float) - [0x20, 0x80, 0xC0]).max() <= 6
        assert decoded.duration == pytest.approx(6 / fps, abs=0.1)
        assert json.loads(decoded.metadata["PROMPT"])[node]["class_type"] == "SaveWEBM"


def test_executed_message_carries_the_video_preview(graph_server, clip):
    from tests.e2e.execution_helpers import Client

    client = Client(graph_server.server)
    try:
        result = client.run({
            "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
            "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "ws",
                                                        "format": "auto", "codec": "auto"}},
        })
    finally:
        client.close()
    (executed,) = [m for m in result.events("executed") if m["node"] == "2"]
    assert executed["output"] == {"images": [{"filename": "ws_00001_.mp4", "subfolder": "", "type": "output"}],
                                  "animated": [True]}
    view = graph_server.server.get("/view", params={"filename": "ws_00001_.mp4", "type": "output"})
    assert view.status_code == 200 and view.headers["content-type"] == "video/mp4"


def test_uploaded_videos_are_listed_and_bad_names_refused(graph_server, clip):
    data = (graph_server.input_dir / clip).read_bytes()
    r = graph_server.server.post("/upload/image", files={"image": ("upload.webm", data, "video/webm")})
    assert r.status_code == 200
    options = graph_server.server.get("/object_info/LoadVideo").json()["LoadVideo"]["input"]["required"]["file"]
    assert options[1]["video_upload"] is True
    assert {"clip.mp4", "upload.webm"} <= set(options[1]["options"])
    r = graph_server.server.post("/prompt", json={"prompt": {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "../secret.mp4"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "x", "format": "auto",
                                                    "codec": "auto"}}}})
    assert r.status_code == 400 and "Invalid video file" in r.text


def test_a_slice_past_the_end_fails_clearly(graph_server, clip):
    error = graph_server.error({
        "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
        "2": {"class_type": "Video Slice", "inputs": {"video": ["1", 0], "start_time": 0.5, "duration": 2.0,
                                                      "strict_duration": True}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "x", "format": "auto",
                                                    "codec": "auto"}},
    })
    assert "Failed to slice video" in error["exception_message"]


def test_video_values_have_comfyuis_interface(tmp_path):
    import torch

    from comfy_kernel_core_nodes.media.video import (
        VideoComponents,
        VideoFromComponents,
        VideoFromFile,
        VideoInput,
    )

    path = write_video(tmp_path / "v.mp4", FRAMES, FPS)
    video = VideoFromFile(str(path))
    assert isinstance(video, VideoInput)
    assert video.get_dimensions() == (64, 48) and video.get_frame_count() == 8
    assert video.get_frame_rate() == Fraction(8) and video.get_duration() == pytest.approx(1.0, abs=0.05)
    assert "mp4" in video.get_container_format() and video.get_components().audio is None
    made = VideoFromComponents(VideoComponents(torch.from_numpy(FRAMES / 255.0).float(), Fraction(24)))
    assert made.get_duration() == pytest.approx(8 / 24) and made.get_frame_count() == 8
    assert made.as_trimmed(start_time=10.0) is None
    with pytest.raises(ValueError, match="even width"):
        VideoFromComponents(VideoComponents(torch.zeros(1, 5, 5, 3), Fraction(1))).save_to(str(tmp_path / "o.mp4"))


def test_streams_mp4_cannot_hold_are_encoded_instead(tmp_path):
    import av

    from comfy_kernel_core_nodes.media.video import VideoFromFile

    with av.open(str(tmp_path / "in.mov"), mode="w") as out:  # ProRes: fine in .mov, refused by the MP4 muxer
        stream = out.add_stream("prores_ks", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv422p10le"
        for pixels in FRAMES[:3]:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
    VideoFromFile(str(tmp_path / "in.mov")).save_to(str(tmp_path / "out.mp4"))
    result = Decoded(tmp_path / "out.mp4")
    assert result.video_codec == "h264" and result.frames.shape == (3, 48, 64, 3)
    assert np.abs(result.frames.astype(float) - FRAMES[:3]).mean() < 3.0
