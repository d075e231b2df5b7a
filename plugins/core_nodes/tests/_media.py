"""Real media files for the video and audio tests, written and read back with PyAV.

Frames are smooth moving gradients (lossy codecs keep them within a few
levels, so decoded frames can be compared with the source); sounds are sine
tones whose frequency tells the channels apart.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def gradient_frames(count: int, height: int, width: int) -> np.ndarray:
    """uint8 [N, H, W, 3]: a diagonal gradient that brightens frame by frame."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(count):
        r = 40 + 150 * x / max(width - 1, 1) + 5 * i
        g = 40 + 150 * y / max(height - 1, 1)
        b = np.full_like(x, 60 + 12 * i)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def tones(rate: int, seconds: float, freqs: tuple[float, ...] = (440.0, 660.0), amplitude: float = 0.4) -> np.ndarray:
    """float32 [C, T]: one sine per channel."""
    t = np.arange(int(round(rate * seconds)), dtype=np.float64) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def write_video(path: Path, frames: np.ndarray, fps: int, audio: tuple[np.ndarray, int] | None = None,
                metadata: dict[str, str] | None = None) -> Path:
    """An H.264 MP4 (AAC audio when given) of uint8 frames."""
    with av.open(str(path), mode="w") as out:
        for key, value in (metadata or {}).items():
            out.metadata[key] = value
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"}
        audio_stream = None
        if audio is not None:
            samples, rate = audio
            audio_stream = out.add_stream("aac", rate=rate, layout="mono" if samples.shape[0] == 1 else "stereo")
        for pixels in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
        if audio_stream is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T.reshape(1, -1)), format="flt",
                                               layout=audio_stream.layout.name)
            frame.sample_rate, frame.pts = rate, 0
            out.mux(audio_stream.encode(frame))
            out.mux(audio_stream.encode(None))
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV of float samples [C, T]."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    with av.open(str(path), mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono" if pcm.shape[0] == 1 else "stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T.reshape(1, -1)), format="s16",
                                           layout=stream.layout.name)
        frame.sample_rate, frame.pts = rate, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class Decoded:
    """Everything a test checks about a media file."""

    def __init__(self, path: Path):
        with av.open(str(path)) as container:
            self.format = container.format.name
            self.metadata = dict(container.metadata)
            self.duration = container.duration / av.time_base if container.duration is not None else None
            self.video_codec = self.fps = None
            frames = []
            if container.streams.video:
                stream = container.streams.video[0]
                self.video_codec = stream.codec_context.name
                self.fps = Fraction(stream.average_rate) if stream.average_rate else None
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            self.frames = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
            self.audio: np.ndarray | None = None
            self.sample_rate = None
            self.audio_codec = None
            if container.streams.audio:
                container.seek(0)
                stream = container.streams.audio[0]
                self.audio_codec = stream.codec_context.name
                self.sample_rate = stream.codec_context.sample_rate
                resampler = av.AudioResampler(format="fltp")
                chunks = [p.to_ndarray() for f in container.decode(stream) for p in resampler.resample(f)]
                self.audio = np.concatenate(chunks, axis=1) if chunks else None


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[-1])))
    return float(np.fft.rfftfreq(samples.shape[-1], 1 / rate)[int(np.argmax(spectrum))])


def ui_files(output: dict[str, Any], key: str) -> list[dict[str, str]]:
    return list(output.get(key) or [])
