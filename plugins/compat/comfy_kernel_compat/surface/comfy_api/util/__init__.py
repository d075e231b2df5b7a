"""``comfy_api.util``: video container and codec names used by the V3 video types."""

from __future__ import annotations

import enum


class VideoContainer(enum.StrEnum):
    AUTO = "auto"
    MP4 = "mp4"


class VideoCodec(enum.StrEnum):
    AUTO = "auto"
    H264 = "h264"


__all__ = ["VideoContainer", "VideoCodec"]
