"""VIDEO nodes (ComfyUI's ``comfy_extras.nodes_video``): load, save, build from frames, split, trim.

VIDEO values are :mod:`..media.video` objects. Saved videos are reported to
the frontend the way ComfyUI reports them: ``{"images": [file], "animated":
[true]}``, which it shows in a video player (it tells a video from an animated
image by the file extension). Video files are written through PyAV; file
names follow SaveImage's counter rules.
"""

from __future__ import annotations

import os
from typing import Any

from comfy_kernel.nodes import io

from . import context
from .common import NodeDef
from .save import next_counter, reserve, split_prefix

MODULE = "comfy_extras.nodes_video"
WEBM_ENCODERS = {"vp9": "libvpx-vp9", "av1": "libsvtav1"}


def video_preview(file: str, subfolder: str, kind: str = "output") -> dict[str, Any]:
    """The ``ui`` of a node that saved a video: what the frontend's video preview reads."""
    return {"images": [io.ui.SavedResult(file, subfolder, kind)], "animated": [True]}


def reserve_file(prefix: str, width: int, height: int, ext: str) -> tuple[str, str, str]:
    """``(path, file name, subfolder)`` of a new, empty, exclusively created output file."""
    folder, filename, subfolder = split_prefix(prefix, context.output_dir(), width, height)
    handle, file, _ = reserve(folder, filename, next_counter(folder, filename), ext)
    handle.close()
    return os.path.join(folder, file), file, subfolder


def saved_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, Any] | None:
    """Container tags: every ``extra_pnginfo`` entry (the workflow) and the prompt; none with --disable-metadata."""
    if context.option("disable_metadata", False):
        return None
    metadata: dict[str, Any] = {}
    if isinstance(extra_pnginfo, dict):
        metadata.update(extra_pnginfo)
    if prompt is not None:
        metadata["prompt"] = prompt
    return metadata or None


def _discard(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def input_videos() -> list[str]:
    from comfy_kernel.files.folders import content_category

    return sorted(f for f in context.input_files() if content_category(f) == "video")


class SaveWEBM(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveWEBM", category="image/video", is_experimental=True, is_output_node=True,
            description="Encodes images as a WebM video (VP9 or AV1) in the output directory.",
            inputs=[
                io.Image.Input("images"),
                io.String.Input("filename_prefix", default="ComfyUI"),
                io.Combo.Input("codec", options=["vp9", "av1"]),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.01),
                io.Float.Input("crf", default=32.0, min=0, max=63.0, step=1,
                               tooltip="Constant rate factor: higher is smaller and lower quality."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo])

    @classmethod
    def execute(cls, images: Any, codec: str, fps: float, filename_prefix: str, crf: float) -> io.NodeOutput:
        import json
        from fractions import Fraction

        import av
        import torch

        if codec not in WEBM_ENCODERS:
            raise ValueError(f"Unknown WebM codec: {codec}")
        height, width = int(images.shape[-3]), int(images.shape[-2])
        path, file, subfolder = reserve_file(filename_prefix, width, height, "webm")
        try:
            with av.open(path, mode="w", format="webm") as out:
                metadata = saved_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo) or {}
                for key, value in metadata.items():
                    out.metadata[key] = json.dumps(value)
                stream = out.add_stream(WEBM_ENCODERS[codec], rate=Fraction(round(fps * 1000), 1000))
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p10le" if codec == "av1" else "yuv420p"
                stream.bit_rate = 0
                stream.options = {"crf": str(crf), **({"preset": "6"} if codec == "av1" else {})}
                for image in images:
                    pixels = torch.clamp(image[..., :3] * 255, min=0, max=255).to("cpu", torch.uint8).numpy()
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
                out.mux(stream.encode(None))
        except BaseException:
            _discard(path)
            raise
        return io.NodeOutput(ui=video_preview(file, subfolder))


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveVideo", display_name="Save Video", category="image/video", is_output_node=True,
            description="Saves the input images to your ComfyUI output directory.",
            inputs=[
                io.Video.Input("video", tooltip="The video to save."),
                io.String.Input("filename_prefix", default="video/ComfyUI", tooltip=(
                    "File name prefix; may contain a subfolder and %width%, %height%, %year% ... tokens.")),
                io.Combo.Input("format", options=["auto", "mp4"], default="auto",
                               tooltip="The container to save the video in."),
                io.Combo.Input("codec", options=["auto", "h264"], default="auto",
                               tooltip="The video codec; auto keeps a loaded video's streams when it can."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo])

    @classmethod
    def execute(cls, video: Any, filename_prefix: str, format: str, codec: str) -> io.NodeOutput:
        from ..media.video import VideoContainer

        width, height = video.get_dimensions()
        path, file, subfolder = reserve_file(filename_prefix, width, height, VideoContainer.get_extension(format))
        try:
            video.save_to(path, format=format, codec=codec,
                          metadata=saved_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo))
        except BaseException:
            _discard(path)
            raise
        return io.NodeOutput(ui=video_preview(file, subfolder))


class CreateVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CreateVideo", display_name="Create Video", category="image/video",
            description="Create a video from images.",
            inputs=[
                io.Image.Input("images", tooltip="The frames of the video."),
                io.Float.Input("fps", default=30.0, min=1.0, max=120.0, step=1.0),
                io.Audio.Input("audio", optional=True, tooltip="A soundtrack for the video."),
            ],
            outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, images: Any, fps: float, audio: Any = None) -> io.NodeOutput:
        from fractions import Fraction

        from ..media.video import VideoComponents, VideoFromComponents

        return io.NodeOutput(VideoFromComponents(VideoComponents(images=images, audio=audio,
                                                                 frame_rate=Fraction(fps))))


class GetVideoComponents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GetVideoComponents", display_name="Get Video Components", category="image/video",
            description="Extracts all components from a video: frames, audio, and framerate.",
            inputs=[io.Video.Input("video", tooltip="The video to split.")],
            outputs=[io.Image.Output(display_name="images"), io.Audio.Output(display_name="audio"),
                     io.Float.Output(display_name="fps")])

    @classmethod
    def execute(cls, video: Any) -> io.NodeOutput:
        components = video.get_components()
        return io.NodeOutput(components.images, components.audio, float(components.frame_rate))


class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadVideo", display_name="Load Video", category="image/video",
            inputs=[io.Combo.Input("file", options=input_videos(), upload="video")],
            outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, file: str) -> io.NodeOutput:
        from ..media.video import VideoFromFile

        return io.NodeOutput(VideoFromFile(context.annotated_input_path(file)))

    @classmethod
    def fingerprint_inputs(cls, file: str) -> Any:
        # The modification time, not a hash: hashing a large video on every queue costs too much.
        return os.path.getmtime(context.annotated_input_path(file))

    @classmethod
    def validate_inputs(cls, file: str) -> bool | str:
        try:
            path = context.annotated_input_path(file)
        except (ValueError, RuntimeError):
            path = None
        if path is None or not os.path.isfile(path):
            return f"Invalid video file: {file}"
        return True


class VideoSlice(io.ComfyNode):
    """ "Video Slice" (shown as Trim Video), newer than ComfyUI 0.3.64."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Video Slice", display_name="Trim Video", category="video",
            search_aliases=["trim video duration", "skip first frames", "frame load cap", "start time"],
            inputs=[
                io.Video.Input("video"),
                io.Float.Input("start_time", default=0.0, max=1e5, min=-1e5, step=0.001,
                               tooltip="Start in seconds; negative counts from the end."),
                io.Float.Input("duration", default=0.0, min=0.0, step=0.001,
                               tooltip="Length in seconds; 0 keeps everything after the start."),
                io.Boolean.Input("strict_duration", default=False,
                                 tooltip="Fail when the video is shorter than the requested duration."),
            ],
            outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, video: Any, start_time: float, duration: float, strict_duration: bool) -> io.NodeOutput:
        trimmed = video.as_trimmed(start_time, duration, strict_duration=strict_duration)
        if trimmed is None:
            raise ValueError(f"Failed to slice video:\nSource duration: {video.get_duration()}\n"
                             f"Start time: {start_time}\nTarget duration: {duration}")
        return io.NodeOutput(trimmed)


NODES = [
    NodeDef("SaveWEBM", SaveWEBM, None, MODULE),
    NodeDef("SaveVideo", SaveVideo, "Save Video", MODULE),
    NodeDef("CreateVideo", CreateVideo, "Create Video", MODULE),
    NodeDef("GetVideoComponents", GetVideoComponents, "Get Video Components", MODULE),
    NodeDef("LoadVideo", LoadVideo, "Load Video", MODULE),
    NodeDef("Video Slice", VideoSlice, "Trim Video", MODULE),
]
