"""Frame rate, frame count, size and duration of a video or animated image file.

Animated GIF, WebP and PNG are read with Pillow (a kernel dependency; FFmpeg
cannot decode animated WebP). Other containers need PyAV (``pip install
comfy-kernel-billing[video]``), which reads the container's header and the
video stream's parameters without decoding frames, except when the container
does not record a frame count.
"""

from __future__ import annotations

import os
from typing import Any

IMAGE_EXTENSIONS = (".gif", ".webp", ".png", ".apng")


class Unreadable(Exception):
    """The file is not a video we can read (the message says why)."""


def probe(path: str) -> dict[str, Any]:
    """``{"size": [w, h], "fps", "frames", "duration"}`` (plus ``"alpha": True`` for transparent video)."""
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return _probe_image(path)
    return _probe_av(path)


def _probe_image(path: str) -> dict[str, Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            total_ms = 0.0
            for index in range(frames):
                im.seek(index)
                im.load()  # WebP reports a frame's duration once it is decoded
                total_ms += float(im.info.get("duration") or 0)
            size = [im.width, im.height]
            alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise Unreadable(f"not a readable image: {exc}") from None
    duration = total_ms / 1000.0
    fps = frames / duration if duration > 0 else 0.0
    out: dict[str, Any] = {"size": size, "fps": fps, "frames": frames, "duration": duration}
    if alpha:
        out["alpha"] = True
    return out


def _probe_av(path: str) -> dict[str, Any]:
    try:
        import av
    except ImportError:
        raise Unreadable("reading video files needs PyAV: pip install comfy-kernel-billing[video]") from None
    try:
        with av.open(path) as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise Unreadable("the file has no video stream")
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            ctx = stream.codec_context
            size = [int(ctx.width), int(ctx.height)]
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = 0.0
            frames = int(stream.frames or 0)
            if frames <= 0 and duration > 0 and fps > 0:
                frames = int(round(duration * fps))
            elif frames <= 0:  # no count and no duration recorded: count the packets
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            pix = str(getattr(ctx, "pix_fmt", "") or "")
    except Unreadable:
        raise
    except Exception as exc:  # av raises its own error types for broken files
        raise Unreadable(f"not a readable video: {exc}") from None
    out: dict[str, Any] = {"size": size, "fps": fps, "frames": frames, "duration": duration}
    if pix.startswith(("yuva", "rgba", "argb", "bgra", "abgr", "gbrap")):
        out["alpha"] = True
    return out


class ProbeCache:
    """Probes keyed by path and modification time (the same file is read once)."""

    def __init__(self, size: int = 512):
        self.size = size
        self.entries: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, path: str) -> dict[str, Any]:
        mtime = os.stat(path).st_mtime
        hit = self.entries.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        value = probe(path)
        if len(self.entries) >= self.size:
            self.entries.pop(next(iter(self.entries)))
        self.entries[path] = (mtime, value)
        return value
