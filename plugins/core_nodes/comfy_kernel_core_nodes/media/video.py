"""The VIDEO type: frames, audio and frame rate, from a file or from tensors.

A VIDEO value is a :class:`VideoInput`, the interface ComfyUI's ``comfy_api``
gives video values (``get_components``, ``get_dimensions``, ``get_duration``,
``get_frame_count``, ``get_frame_rate``, ``save_to``, ``as_trimmed`` ...), so
node packs that take or make videos work with these objects unchanged.

- :class:`VideoFromFile` refers to a file and decodes only when asked; saving
  it again without changes copies the encoded streams (no quality loss).
- :class:`VideoFromComponents` holds IMAGE frames ``[N, H, W, 3]`` in [0, 1],
  an optional AUDIO value and a frame rate; saving encodes H.264 (or AV1) with
  AAC (or Opus) audio.

Frames decode as 8-bit RGB divided by 255; audio decodes to float32 planar
samples ``[1, C, T]``. Importing this module imports neither torch nor PyAV
(node packs import these names at load time); the methods do.
"""

from __future__ import annotations

import enum
import io
import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class VideoContainer(str, enum.Enum):
    AUTO = "auto"
    MP4 = "mp4"
    MKV = "mkv"
    WEBM = "webm"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]

    @classmethod
    def get_extension(cls, value: str | VideoContainer) -> str:
        value = cls(value)
        return "mp4" if value in (cls.AUTO, cls.MP4) else value.value


class VideoCodec(str, enum.Enum):
    AUTO = "auto"
    H264 = "h264"
    AV1 = "av1"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]


@dataclass
class VideoComponents:
    """Frames ``[N, H, W, 3]`` in [0, 1], frame rate, optional AUDIO value and container tags."""

    images: torch.Tensor
    frame_rate: Fraction
    audio: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


_FORMAT_NAMES = {VideoContainer.MP4: "mp4", VideoContainer.MKV: "matroska", VideoContainer.WEBM: "webm"}
_ENCODERS = {VideoCodec.H264: "libx264", VideoCodec.AV1: "libsvtav1"}
_CODEC_NAMES = {VideoCodec.H264: "h264", VideoCodec.AV1: "av1"}


class VideoInput(ABC):
    """A video value. Subclasses provide ``get_components`` and ``save_to``; the rest has defaults."""

    @abstractmethod
    def get_components(self) -> VideoComponents:
        """Decoded frames, audio and frame rate."""

    @abstractmethod
    def save_to(self, path: str | IO[bytes], format: VideoContainer | str = VideoContainer.AUTO,
                codec: VideoCodec | str = VideoCodec.AUTO, metadata: dict | None = None, **options: Any) -> None:
        """Write the video to a path or binary file object."""

    def get_stream_source(self) -> str | io.BytesIO:
        """Something ``av.open`` can read: a path, or an in-memory MP4 of the video."""
        buffer = io.BytesIO()
        self.save_to(buffer)
        buffer.seek(0)
        return buffer

    def get_dimensions(self) -> tuple[int, int]:
        """``(width, height)``."""
        images = self.get_components().images
        return int(images.shape[2]), int(images.shape[1])

    def get_duration(self) -> float:
        components = self.get_components()
        return float(components.images.shape[0] / components.frame_rate)

    def get_frame_count(self) -> int:
        return int(self.get_components().images.shape[0])

    def get_frame_rate(self) -> Fraction:
        return Fraction(self.get_components().frame_rate)

    def get_bit_depth(self) -> int:
        return 8

    def get_color_space(self) -> str:
        return "auto"

    def get_container_format(self) -> str:
        import av

        with av.open(self.get_stream_source(), mode="r") as container:
            return container.format.name

    def as_trimmed(self, start_time: float | None = None, duration: float | None = None,
                   strict_duration: bool = False) -> VideoInput | None:
        """The part from ``start_time`` (negative: from the end) lasting ``duration`` (0: to the end).

        None when nothing is left, or when ``strict_duration`` and less than
        ``duration`` seconds are left.
        """
        return _trim_components(self.get_components(), start_time, duration, strict_duration)

    def as_cropped(self, x: int = 0, y: int = 0, width: int = 0, height: int = 0) -> VideoInput:
        """The frames cut to a rectangle (clamped to the frame, even-aligned); the same video if empty or full."""
        components = self.get_components()
        rect = crop_rect(x, y, width, height, components.images.shape[2], components.images.shape[1])
        if rect is None:
            return self
        cx, cy, cw, ch = rect
        return VideoFromComponents(VideoComponents(components.images[:, cy:cy + ch, cx:cx + cw, :].clone(),
                                                   components.frame_rate, components.audio, components.metadata))


def crop_rect(x: int, y: int, width: int, height: int, frame_w: int, frame_h: int) -> tuple[int, int, int, int] | None:
    x, y = max(0, min(int(x), frame_w)) & ~1, max(0, min(int(y), frame_h)) & ~1
    width = frame_w - x if width <= 0 else min(int(width), frame_w - x)
    height = frame_h - y if height <= 0 else min(int(height), frame_h - y)
    width, height = width & ~1, height & ~1
    if width <= 0 or height <= 0 or (x, y, width, height) == (0, 0, frame_w, frame_h):
        return None
    return x, y, width, height


def _window(total: float, start: float | None, duration: float | None) -> tuple[float, float] | None:
    """(absolute start, length) of a trim within ``total`` seconds; None if empty."""
    start, duration = float(start or 0.0), float(duration or 0.0)
    if duration < 0:
        raise ValueError(f"Trim duration must be >= 0, got {duration}")
    begin = max(total + start, 0.0) if start < 0 else start
    remaining = total - begin
    if remaining <= 0:
        return None
    return begin, (min(duration, remaining) if duration else remaining)


def _trim_components(components: VideoComponents, start: float | None, duration: float | None,
                     strict: bool) -> VideoInput | None:
    fps = float(components.frame_rate)
    total = components.images.shape[0] / fps
    window = _window(total, start, duration)
    if window is None or (strict and duration and float(duration) > window[1] + 1e-6):
        return None
    begin, length = window
    first = round(begin * fps)
    count = max(1, round(length * fps))
    audio = components.audio
    if audio is not None:
        rate = audio["sample_rate"]
        lo = round(begin * rate)
        audio = {**audio, "waveform": audio["waveform"][..., lo:lo + round(length * rate)]}
    return VideoFromComponents(VideoComponents(components.images[first:first + count], components.frame_rate,
                                               audio, components.metadata))


def _metadata_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _resolve_output(path: Any, format: Any, codec: Any) -> tuple[VideoContainer, VideoCodec]:
    fmt, cod = VideoContainer(format), VideoCodec(codec)
    if fmt == VideoContainer.AUTO:
        ext = os.path.splitext(os.fspath(path))[1].lower() if isinstance(path, (str, os.PathLike)) else ""
        fmt = {".mkv": VideoContainer.MKV, ".webm": VideoContainer.WEBM}.get(ext, VideoContainer.MP4)
    if cod == VideoCodec.AUTO:
        cod = VideoCodec.AV1 if fmt == VideoContainer.WEBM else VideoCodec.H264
    if fmt == VideoContainer.WEBM and cod != VideoCodec.AV1:
        raise ValueError("WebM output needs the AV1 codec")
    return fmt, cod


def _open_output(path: Any, fmt: VideoContainer) -> Any:
    import av

    options = {"movflags": "use_metadata_tags"} if fmt == VideoContainer.MP4 else {}
    return av.open(path, mode="w", format=_FORMAT_NAMES[fmt], options=options)


class VideoFromComponents(VideoInput):
    """A video held as tensors (what CreateVideo makes)."""

    def __init__(self, components: VideoComponents, **_: Any) -> None:
        self._components = components

    def get_components(self) -> VideoComponents:
        c = self._components
        return VideoComponents(images=c.images, audio=c.audio, frame_rate=c.frame_rate)

    def get_dimensions(self) -> tuple[int, int]:
        images = self._components.images
        return int(images.shape[2]), int(images.shape[1])

    def save_to(self, path: str | IO[bytes], format: VideoContainer | str = VideoContainer.AUTO,
                codec: VideoCodec | str = VideoCodec.AUTO, metadata: dict | None = None,
                crf: float | None = None, **_: Any) -> None:
        import av
        import torch

        from .audio import opus_rate, resample

        fmt, cod = _resolve_output(path, format, codec)
        images = self._components.images
        count, height, width = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
        if width % 2 or height % 2:
            raise ValueError(f"Video frames must have an even width and height for {cod.value}; got {width}x{height}")
        frame_rate = Fraction(round(Fraction(self._components.frame_rate) * 1000), 1000)
        audio = self._components.audio
        with _open_output(path, fmt) as out:
            for key, value in (metadata or {}).items():
                out.metadata[key] = _metadata_value(value)
            stream = out.add_stream(_ENCODERS[cod], rate=frame_rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if crf is not None:
                stream.options = {"crf": str(crf)}
            audio_stream, audio_rate, waveform = None, 0, None
            if audio is not None:
                waveform = audio["waveform"][0].detach().to("cpu", torch.float32)
                audio_rate = int(audio["sample_rate"])
                waveform = waveform[:, :math.ceil(audio_rate / frame_rate * count)]
                if fmt == VideoContainer.WEBM:
                    rate = opus_rate(audio_rate)
                    if rate != audio_rate:
                        waveform, audio_rate = resample(waveform, audio_rate, rate), rate
                layout = "mono" if waveform.shape[0] == 1 else "stereo"
                audio_stream = out.add_stream("libopus" if fmt == VideoContainer.WEBM else "aac",
                                              rate=audio_rate, layout=layout)
            for image in images:
                pixels = (image[..., :3] * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
            if audio_stream is not None and waveform is not None and waveform.shape[-1] > 0:
                frame = av.AudioFrame.from_ndarray(waveform.t().reshape(1, -1).contiguous().numpy(), format="flt",
                                                   layout=audio_stream.layout.name)
                frame.sample_rate, frame.pts = audio_rate, 0
                out.mux(audio_stream.encode(frame))
                out.mux(audio_stream.encode(None))


class VideoFromFile(VideoInput):
    """A video file (path or BytesIO), optionally trimmed to a window; decoded only when asked."""

    def __init__(self, file: str | io.BytesIO, *, start_time: float = 0.0, duration: float = 0.0) -> None:
        self._file = file
        self._start = float(start_time)
        self._duration = float(duration)

    def _open(self) -> Any:
        import av

        if isinstance(self._file, io.BytesIO):
            self._file.seek(0)
        return av.open(self._file, mode="r")

    @staticmethod
    def _video_stream(container: Any) -> Any:
        if not container.streams.video:
            raise ValueError("No video stream found in the file")
        return container.streams.video[0]

    def get_stream_source(self) -> str | io.BytesIO:
        if isinstance(self._file, io.BytesIO):
            self._file.seek(0)
        return self._file

    def get_dimensions(self) -> tuple[int, int]:
        with self._open() as container:
            stream = self._video_stream(container)
            return int(stream.width), int(stream.height)

    def _raw_duration(self) -> float:
        import av

        with self._open() as container:
            if container.duration is not None:
                return float(container.duration / av.time_base)
            stream = self._video_stream(container)
            if stream.frames and stream.average_rate:
                return float(stream.frames / stream.average_rate)
            if stream.average_rate:
                frames = sum(1 for _ in container.decode(stream))
                if frames:
                    return float(frames / stream.average_rate)
        raise ValueError(f"Could not determine the duration of {self._file!r}")

    def _trim_window(self) -> tuple[float, float]:
        """(absolute start, duration or 0 for "to the end") in seconds."""
        if not self._start and not self._duration:
            return 0.0, 0.0
        start = max(self._raw_duration() + self._start, 0.0) if self._start < 0 else self._start
        return start, self._duration

    def get_duration(self) -> float:
        raw = self._raw_duration()
        left = min(raw, -self._start) if self._start < 0 else raw - self._start
        return max(0.0, min(self._duration, left) if self._duration else left)

    def get_frame_rate(self) -> Fraction:
        with self._open() as container:
            stream = self._video_stream(container)
            return Fraction(stream.average_rate) if stream.average_rate else Fraction(1)

    def get_frame_count(self) -> int:
        if not self._start and not self._duration:
            with self._open() as container:
                stream = self._video_stream(container)
                if stream.frames:
                    return int(stream.frames)
        return sum(1 for _ in self._frames())

    def get_container_format(self) -> str:
        with self._open() as container:
            return container.format.name

    def _frames(self) -> Any:
        """Decoded video frames inside the trim window."""
        start, duration = self._trim_window()
        with self._open() as container:
            stream = self._video_stream(container)
            base = stream.time_base
            start_pts = int(start / base) if base else 0
            end_pts = int((start + duration) / base) if base and duration else None
            if start_pts > 0:
                container.seek(start_pts, stream=stream)
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else 0
                if pts < start_pts:
                    continue
                if end_pts is not None and pts >= end_pts:
                    break
                yield frame

    def _audio(self, container: Any) -> dict[str, Any] | None:
        import av
        import numpy as np
        import torch

        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        container.seek(0)
        resampler = av.AudioResampler(format="fltp")
        chunks, first_time = [], None
        for frame in container.decode(stream):
            for planar in resampler.resample(frame):
                if first_time is None:
                    first_time = float(planar.time or 0.0)
                chunks.append(planar.to_ndarray())
        for planar in resampler.resample(None):
            chunks.append(planar.to_ndarray())
        if not chunks:
            return None
        rate = int(stream.sample_rate or 1)
        samples = np.concatenate(chunks, axis=1)
        start, duration = self._trim_window()
        if start or duration:
            lo = max(0, round((start - (first_time or 0.0)) * rate))
            samples = samples[:, lo:lo + round(duration * rate)] if duration else samples[:, lo:]
        return {"waveform": torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0), "sample_rate": rate}

    def get_components(self) -> VideoComponents:
        import torch

        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in self._frames()]
        with self._open() as container:
            stream = self._video_stream(container)
            rate = Fraction(stream.average_rate) if stream.average_rate else Fraction(1)
            if frames:
                images = torch.stack(frames).to(torch.float32) / 255.0
            else:
                images = torch.zeros(0, int(stream.height), int(stream.width), 3)
            audio = self._audio(container)
            metadata = dict(container.metadata)
        return VideoComponents(images=images, frame_rate=rate, audio=audio, metadata=metadata)

    def as_trimmed(self, start_time: float | None = None, duration: float | None = None,
                   strict_duration: bool = False) -> VideoInput | None:
        current = self.get_duration()
        window = _window(current, start_time, duration)
        if window is None or (strict_duration and duration and float(duration) > window[1] + 1e-6):
            return None
        begin, length = window
        own_start = self._trim_window()[0]
        bounded = bool(duration) or bool(self._duration)
        return VideoFromFile(self._file, start_time=own_start + begin, duration=length if bounded else 0.0)

    def save_to(self, path: str | IO[bytes], format: VideoContainer | str = VideoContainer.AUTO,
                codec: VideoCodec | str = VideoCodec.AUTO, metadata: dict | None = None,
                crf: float | None = None, **options: Any) -> None:
        with self._open() as container:
            names = container.format.name.split(",")
            video = container.streams.video[0] if container.streams.video else None
            source_codec = video.codec_context.name if video is not None else None
            fmt, cod = VideoContainer(format), VideoCodec(codec)
            copy = not (self._start or self._duration) and crf is None
            if fmt != VideoContainer.AUTO and _FORMAT_NAMES[fmt] not in names:
                copy = False
            if cod != VideoCodec.AUTO and source_codec is not None and _CODEC_NAMES[cod] != source_codec:
                copy = False
            if copy:
                if fmt == VideoContainer.AUTO and isinstance(path, (str, os.PathLike)):
                    fmt = {".mkv": VideoContainer.MKV, ".webm": VideoContainer.WEBM}.get(
                        os.path.splitext(os.fspath(path))[1].lower(), VideoContainer.MP4)
                elif fmt == VideoContainer.AUTO:
                    fmt = next((f for f, n in _FORMAT_NAMES.items() if n in names), VideoContainer.MP4)
                if _FORMAT_NAMES[fmt] in names:
                    try:
                        self._remux(container, path, fmt, metadata)
                        return
                    except Exception:  # a stream the container cannot hold as is: encode it instead
                        if isinstance(path, io.BytesIO):
                            path.seek(0)
                            path.truncate()
        VideoFromComponents(self.get_components()).save_to(path, format=format, codec=codec, metadata=metadata,
                                                           crf=crf, **options)

    @staticmethod
    def _remux(container: Any, path: Any, fmt: VideoContainer, metadata: dict | None) -> None:
        """Copy the encoded streams into a new file with the source's tags plus ``metadata``."""
        with _open_output(path, fmt) as out:
            for key, value in container.metadata.items():
                if metadata is None or key not in metadata:
                    out.metadata[key] = value
            for key, value in (metadata or {}).items():
                out.metadata[key] = _metadata_value(value)
            mapping = {}
            for stream in container.streams:
                if stream.type in ("video", "audio") and stream.codec_context is not None:
                    mapping[stream] = out.add_stream_from_template(template=stream, opaque=True)
            for packet in container.demux(*mapping):
                if packet.dts is None:
                    continue
                packet.stream = mapping[packet.stream]
                out.mux(packet)
