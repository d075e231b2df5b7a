"""``comfy_api.input``: the value types V3 inputs carry.

Images, masks and latents are plain tensors/dicts on comfy-kernel; these
names exist for annotations and ``isinstance`` checks against the abstract
video type. With the core_nodes plugin installed, ``VideoInput`` is its
VIDEO type (what LoadVideo and CreateVideo produce); otherwise a stand-in
with the same abstract methods. The curve types are the kernel's
(``comfy_kernel.nodes.curves``: what an ``io.Curve`` widget's value becomes).
"""

from __future__ import annotations

import abc
from typing import Any

from comfy_kernel.nodes.curves import CurveInput, CurvePoint, LinearCurve, MonotoneCubicCurve

ImageInput = Any
AudioInput = Any
MaskInput = Any
LatentInput = Any


class _VideoInput(abc.ABC):
    """A video value: components, dimensions and saving, as the V3 API describes it."""

    @abc.abstractmethod
    def get_components(self) -> Any:
        """Frames (IMAGE tensor), audio and frame rate."""

    @abc.abstractmethod
    def save_to(self, path: str, format: Any = None, codec: Any = None, metadata: dict | None = None) -> None:
        """Write the video to ``path``."""

    def get_dimensions(self) -> tuple[int, int]:
        images = self.get_components().images
        return int(images.shape[2]), int(images.shape[1])


try:
    from comfy_kernel_core_nodes.media.video import VideoInput
except ImportError:
    VideoInput = _VideoInput  # type: ignore[assignment,misc]

__all__ = ["ImageInput", "AudioInput", "MaskInput", "LatentInput", "VideoInput", "CurvePoint", "CurveInput",
           "MonotoneCubicCurve", "LinearCurve"]
