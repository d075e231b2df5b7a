"""``comfy_api.util``: video container and codec names and ``VideoComponents``.

core_nodes' definitions when that plugin is installed (so values compare
equal to what its nodes use), otherwise the same names defined here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

try:
    from comfy_kernel_core_nodes.media.video import VideoCodec, VideoComponents, VideoContainer
except ImportError:
    class VideoContainer(enum.StrEnum):  # type: ignore[no-redef]
        AUTO = "auto"
        MP4 = "mp4"

    class VideoCodec(enum.StrEnum):  # type: ignore[no-redef]
        AUTO = "auto"
        H264 = "h264"

    @dataclass
    class VideoComponents:  # type: ignore[no-redef]
        images: Any
        frame_rate: Fraction
        audio: Any = None
        metadata: Any = None


__all__ = ["VideoContainer", "VideoCodec", "VideoComponents"]
