"""``comfy_api.input_impl``: concrete video inputs. Video decoding is not part of comfy-kernel."""

from __future__ import annotations

from typing import Any

from comfy_api.input import VideoInput


class VideoFromFile(VideoInput):
    """Refers to a video file; reading its frames needs a video backend comfy-kernel does not bundle."""

    def __init__(self, file: Any):
        self.file = file

    def get_components(self) -> Any:
        raise NotImplementedError("comfy-kernel does not decode video files")

    def save_to(self, path: str, format: Any = None, codec: Any = None, metadata: dict | None = None) -> None:
        source = self.file
        if isinstance(source, str):
            import shutil

            shutil.copyfile(source, path)
            return
        with open(path, "wb") as f:
            f.write(source.read())


__all__ = ["VideoFromFile"]
