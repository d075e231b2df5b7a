"""``comfy_api.input_impl``: concrete video values.

With the core_nodes plugin installed these are its PyAV-backed classes
(``VideoFromFile`` decodes, ``VideoFromComponents`` encodes). Without it,
``VideoFromFile`` can only copy its file and ``VideoFromComponents`` is absent.
"""

from __future__ import annotations

from typing import Any

from comfy_api.input import VideoInput


class _VideoFromFile(VideoInput):
    """Refers to a video file; reading its frames needs core_nodes' video support."""

    def __init__(self, file: Any):
        self.file = file

    def get_components(self) -> Any:
        raise NotImplementedError("decoding video needs the comfy-kernel-core-nodes plugin")

    def save_to(self, path: str, format: Any = None, codec: Any = None, metadata: dict | None = None) -> None:
        source = self.file
        if isinstance(source, str):
            import shutil

            shutil.copyfile(source, path)
            return
        with open(path, "wb") as f:
            f.write(source.read())


try:
    from comfy_kernel_core_nodes.media.video import VideoFromComponents, VideoFromFile
except ImportError:
    VideoFromFile = _VideoFromFile  # type: ignore[assignment,misc]
    __all__ = ["VideoFromFile"]
else:
    __all__ = ["VideoFromFile", "VideoFromComponents"]
