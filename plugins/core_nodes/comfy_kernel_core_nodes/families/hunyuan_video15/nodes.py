"""HunyuanVideo 1.5's nodes (ComfyUI's comfy_extras.nodes_hunyuan, as the 1.5 templates use them).

``EmptyHunyuanVideo15Latent`` makes the 32-channel, 16x-compressed empty
latent; ``HunyuanVideo15ImageToVideo`` encodes the start image into the
first latent frames and marks them kept (``concat_latent_image`` /
``concat_mask``, the model's 33 extra channels), and passes SigLIP's output
on; ``HunyuanVideo15SuperResolution`` packs a low-resolution latent (and
optionally a re-encoded start image) for the 1080p super-resolution model;
``LatentUpscaleModelLoader`` and ``HunyuanVideo15LatentUpscaleWithModel``
load and run the latent upsamplers (:mod:`.upsampler`).
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from ...nodes import context
from ...nodes.common import MAX_RESOLUTION, NodeDef

MODULE = "comfy_extras.nodes_hunyuan"
CHANNELS = 32


def _with(conditioning: list, values: dict[str, Any]) -> list:
    return [[cond, {**opts, **values}] for cond, opts in conditioning]


def _empty(batch_size: int, length: int, height: int, width: int) -> Any:
    import torch

    return torch.zeros([batch_size, CHANNELS, (length - 1) // 4 + 1, height // 16, width // 16])


def _video_inputs(length: int) -> list:
    return [io.Int.Input("width", default=848, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=length, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096)]


class EmptyHunyuanVideo15Latent(io.ComfyNode):
    """Zeros [batch, 32, (length - 1) / 4 + 1, height / 16, width / 16]."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="EmptyHunyuanVideo15Latent", display_name="Empty HunyuanVideo 1.5 Latent",
                         category="latent/video", inputs=_video_inputs(25), outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, width: int, height: int, length: int, batch_size: int = 1) -> io.NodeOutput:
        return io.NodeOutput({"samples": _empty(batch_size, length, height, width)})


class HunyuanVideo15ImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="HunyuanVideo15ImageToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            *_video_inputs(33),
            io.Image.Input("start_image", optional=True),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive: list, negative: list, vae: Any, width: int, height: int, length: int,
                batch_size: int, start_image: Any = None, clip_vision_output: Any = None) -> io.NodeOutput:
        import torch

        from comfy_kernel.nodes.resize import common_upscale

        latent = _empty(batch_size, length, height, width)
        if start_image is not None:
            frames = common_upscale(start_image[:length].movedim(-1, 1), width, height, "bilinear", "center")
            encoded = vae.encode(frames.movedim(1, -1)[:, :, :, :3])
            concat = torch.zeros_like(latent)
            concat[:, :, : encoded.shape[2]] = encoded[:, :, : latent.shape[2]]
            mask = torch.ones((1, 1, latent.shape[2], latent.shape[3], latent.shape[4]))
            mask[:, :, : (frames.shape[0] - 1) // 4 + 1] = 0.0
            values = {"concat_latent_image": concat, "concat_mask": mask}
            positive, negative = _with(positive, values), _with(negative, values)
        if clip_vision_output is not None:
            values = {"clip_vision_output": clip_vision_output}
            positive, negative = _with(positive, values), _with(negative, values)
        return io.NodeOutput(positive, negative, {"samples": latent})


class HunyuanVideo15SuperResolution(io.ComfyNode):
    """Conditioning for the super-resolution model: [start image latent, its mask, the latent, ones]."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="HunyuanVideo15SuperResolution", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"),
            io.Vae.Input("vae", optional=True), io.Image.Input("start_image", optional=True),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
            io.Latent.Input("latent"),
            io.Float.Input("noise_augmentation", default=0.70, min=0.0, max=1.0, step=0.01),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive: list, negative: list, latent: dict, noise_augmentation: float, vae: Any = None,
                start_image: Any = None, clip_vision_output: Any = None) -> io.NodeOutput:
        import torch

        from comfy_kernel.nodes.resize import common_upscale

        samples = latent["samples"]
        c = samples.shape[1]
        cond = torch.zeros([samples.shape[0], 2 * c + 2, *samples.shape[2:]])
        cond[:, c + 1: 2 * c + 1] = samples
        cond[:, 2 * c + 1] = 1
        if start_image is not None and vae is not None:
            image = common_upscale(start_image.movedim(-1, 1), samples.shape[-1] * 16, samples.shape[-2] * 16,
                                   "bilinear", "center").movedim(1, -1)
            encoded = vae.encode(image[:, :, :, :3])
            cond[:, :c, : encoded.shape[2]] = encoded[:, :, : cond.shape[2]]
            cond[:, c, 0] = 1
        values = {"concat_latent_image": cond, "noise_augmentation": noise_augmentation}
        positive, negative = _with(positive, values), _with(negative, values)
        if clip_vision_output is not None:
            values = {"clip_vision_output": clip_vision_output}
            positive, negative = _with(positive, values), _with(negative, values)
        return io.NodeOutput(positive, negative, latent)


LatentUpscaleModel = io.Custom("LATENT_UPSCALE_MODEL")


class LatentUpscaleModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentUpscaleModelLoader", display_name="Load Latent Upscale Model",
                         category="loaders",
                         inputs=[io.Combo.Input("model_name", options=context.list_files("latent_upscale_models"))],
                         outputs=[LatentUpscaleModel.Output()])

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        from .upsampler import load_latent_upsampler

        return io.NodeOutput(load_latent_upsampler(context.full_path("latent_upscale_models", model_name)))


class HunyuanVideo15LatentUpscaleWithModel(io.ComfyNode):
    """Resize the latent to width/16 x height/16 (at least 64 pixels a side), then run the upsampler on it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanVideo15LatentUpscaleWithModel",
            display_name="Hunyuan Video 15 Latent Upscale With Model", category="latent",
            inputs=[LatentUpscaleModel.Input("model"), io.Latent.Input("samples"),
                    io.Combo.Input("upscale_method", options=["nearest-exact", "bilinear", "area", "bicubic",
                                                              "bislerp"], default="bilinear"),
                    io.Int.Input("width", default=1280, min=0, max=16384, step=8),
                    io.Int.Input("height", default=720, min=0, max=16384, step=8),
                    io.Combo.Input("crop", options=["disabled", "center"])],
            outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, model: Any, samples: dict, upscale_method: str, width: int, height: int,
                crop: str) -> io.NodeOutput:
        from comfy_kernel.nodes.resize import common_upscale

        if width == 0 and height == 0:
            return io.NodeOutput(samples)
        latent = samples["samples"]
        if width == 0:
            height = max(64, height)
            width = max(64, round(latent.shape[-1] * height / latent.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(latent.shape[-2] * width / latent.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        resized = common_upscale(latent, width // 16, height // 16, upscale_method, crop)
        return io.NodeOutput({"samples": model.resample_latent(resized)})


NODES = [
    NodeDef("EmptyHunyuanVideo15Latent", EmptyHunyuanVideo15Latent, "Empty HunyuanVideo 1.5 Latent", MODULE),
    NodeDef("HunyuanVideo15ImageToVideo", HunyuanVideo15ImageToVideo, None, MODULE),
    NodeDef("HunyuanVideo15SuperResolution", HunyuanVideo15SuperResolution, None, MODULE),
    NodeDef("LatentUpscaleModelLoader", LatentUpscaleModelLoader, "Load Latent Upscale Model", MODULE),
    NodeDef("HunyuanVideo15LatentUpscaleWithModel", HunyuanVideo15LatentUpscaleWithModel,
            "Hunyuan Video 15 Latent Upscale With Model", MODULE),
]
