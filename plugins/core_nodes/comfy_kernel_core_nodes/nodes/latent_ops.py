"""LATENT maths and transforms: add, subtract, multiply, interpolate, concatenate, cut,
latent operations (tonemap, sharpen, blend), video frame replacement and start-frame normalisation,
and ``nodes``' crop, flip, rotate and blend.

Every node copies the input dict (``noise_mask``, ``batch_index`` and other keys
carry over) and replaces ``samples``. A second latent of another size is
resized to the first one's with bilinear + center crop, and its batch repeated
or cut to the first one's size, as ComfyUI does.
"""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io

from .common import MAX_RESOLUTION, NodeDef

MODULE = "comfy_extras.nodes_latent"
Latent = dict[str, Any]


def repeat_to_batch_size(tensor: Any, batch_size: int, dim: int = 0) -> Any:
    """Cut or cyclically repeat ``tensor`` along ``dim`` to ``batch_size`` entries."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / size)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def reshape_latent_to(target_shape: Any, latent: Any, repeat_batch: bool = True) -> Any:
    from comfy_kernel.nodes.resize import common_upscale

    if latent.shape[1:] != target_shape[1:]:
        latent = common_upscale(latent, target_shape[-1], target_shape[-2], "bilinear", "center")
    return repeat_to_batch_size(latent, target_shape[0]) if repeat_batch else latent


def _with(latent: Latent, samples: Any) -> Latent:
    out = latent.copy()
    out["samples"] = samples
    return out


class LatentAdd(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentAdd", category="latent/advanced",
                         inputs=[io.Latent.Input("samples1"), io.Latent.Input("samples2")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples1: Latent, samples2: Latent) -> io.NodeOutput:
        s1 = samples1["samples"]
        return io.NodeOutput(_with(samples1, s1 + reshape_latent_to(s1.shape, samples2["samples"])))


class LatentSubtract(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentSubtract", category="latent/advanced",
                         inputs=[io.Latent.Input("samples1"), io.Latent.Input("samples2")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples1: Latent, samples2: Latent) -> io.NodeOutput:
        s1 = samples1["samples"]
        return io.NodeOutput(_with(samples1, s1 - reshape_latent_to(s1.shape, samples2["samples"])))


class LatentMultiply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentMultiply", category="latent/advanced",
                         inputs=[io.Latent.Input("samples"),
                                 io.Float.Input("multiplier", default=1.0, min=-10.0, max=10.0, step=0.01)],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples: Latent, multiplier: float) -> io.NodeOutput:
        return io.NodeOutput(_with(samples, samples["samples"] * multiplier))


class LatentInterpolate(io.ComfyNode):
    """Interpolates direction (per-pixel unit vectors over channels) and magnitude separately."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentInterpolate", category="latent/advanced",
                         inputs=[io.Latent.Input("samples1"), io.Latent.Input("samples2"),
                                 io.Float.Input("ratio", default=1.0, min=0.0, max=1.0, step=0.01)],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples1: Latent, samples2: Latent, ratio: float) -> io.NodeOutput:
        import torch

        s1 = samples1["samples"]
        s2 = reshape_latent_to(s1.shape, samples2["samples"])
        m1 = torch.linalg.vector_norm(s1, dim=1, keepdim=True)
        m2 = torch.linalg.vector_norm(s2, dim=1, keepdim=True)
        t = torch.nan_to_num(s1 / m1) * ratio + torch.nan_to_num(s2 / m2) * (1.0 - ratio)
        direction = torch.nan_to_num(t / torch.linalg.vector_norm(t, dim=1, keepdim=True))
        return io.NodeOutput(_with(samples1, direction * (m1 * ratio + m2 * (1.0 - ratio))))


def _axis(dim: str, ndim: int) -> int:
    if "x" in dim:
        return ndim - 1
    if "y" in dim:
        return ndim - 2
    return ndim - 3


class LatentConcat(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentConcat", category="latent/advanced",
                         inputs=[io.Latent.Input("samples1"), io.Latent.Input("samples2"),
                                 io.Combo.Input("dim", options=["x", "-x", "y", "-y", "t", "-t"])],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples1: Latent, samples2: Latent, dim: str) -> io.NodeOutput:
        import torch

        s1 = samples1["samples"]
        s2 = repeat_to_batch_size(samples2["samples"], s1.shape[0])
        pair = (s2, s1) if "-" in dim else (s1, s2)
        axis = {"x": -1, "y": -2, "t": -3}[dim.lstrip("-")]
        return io.NodeOutput(_with(samples1, torch.cat(pair, dim=axis)))


class LatentCut(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentCut", category="latent/advanced",
                         inputs=[io.Latent.Input("samples"), io.Combo.Input("dim", options=["x", "y", "t"]),
                                 io.Int.Input("index", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
                                 io.Int.Input("amount", default=1, min=1, max=MAX_RESOLUTION, step=1)],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples: Latent, dim: str, index: int, amount: int) -> io.NodeOutput:
        import torch

        s = samples["samples"]
        axis = _axis(dim, s.ndim)
        if index >= 0:
            index = min(index, s.shape[axis] - 1)
            amount = min(s.shape[axis] - index, amount)
        else:
            index = max(index, -s.shape[axis])
            amount = min(-index, amount)
        return io.NodeOutput(_with(samples, torch.narrow(s, axis, index, amount)))


class LatentCutToBatch(io.ComfyNode):
    """Slices one axis into chunks of ``slice_size`` and stacks the chunks on the batch axis."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentCutToBatch", category="model/latent/advanced",
                         search_aliases=["slice to batch", "split latent", "tile latent"],
                         inputs=[io.Latent.Input("samples"), io.Combo.Input("dim", options=["t", "x", "y"]),
                                 io.Int.Input("slice_size", default=1, min=1, max=MAX_RESOLUTION, step=1)],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples: Latent, dim: str, slice_size: int) -> io.NodeOutput:
        s = samples["samples"]
        axis = _axis(dim, s.ndim)
        if axis < 2:
            return io.NodeOutput(samples)
        moved = s.movedim(axis, 1)
        if moved.shape[1] < slice_size:
            slice_size = moved.shape[1]
        elif moved.shape[1] % slice_size:
            moved = moved[:, :moved.shape[1] // slice_size * slice_size]
        cut = moved.reshape([-1, slice_size] + list(moved.shape[2:])).movedim(1, axis)
        return io.NodeOutput(_with(samples, cut))


class LatentApplyOperation(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentApplyOperation", category="latent/advanced/operations",
                         is_experimental=True,
                         inputs=[io.Latent.Input("samples"), io.LatentOperation.Input("operation")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples: Latent, operation: Any) -> io.NodeOutput:
        return io.NodeOutput(_with(samples, operation(latent=samples["samples"])))


def tonemap_reinhard(latent: Any, multiplier: float) -> Any:
    """Reinhard-compress each pixel's channel-vector length against mean + 5 std of the lengths."""
    import torch

    magnitude = (torch.linalg.vector_norm(latent, dim=1) + 1e-10)[:, None]
    normalized = latent / magnitude
    dims = list(range(1, magnitude.ndim))
    mean = torch.mean(magnitude, dim=dims, keepdim=True)
    std = torch.std(magnitude, dim=dims, keepdim=True)
    top = (std * 5 + mean) * multiplier
    scaled = magnitude * (1.0 / top)
    return normalized * (scaled / (scaled + 1.0) * top)


class LatentOperationTonemapReinhard(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentOperationTonemapReinhard", category="latent/advanced/operations",
                         is_experimental=True,
                         inputs=[io.Float.Input("multiplier", default=1.0, min=0.0, max=100.0, step=0.01)],
                         outputs=[io.LatentOperation.Output()])

    @classmethod
    def execute(cls, multiplier: float) -> io.NodeOutput:
        def operation(latent: Any, **kwargs: Any) -> Any:
            return tonemap_reinhard(latent, multiplier)
        return io.NodeOutput(operation)


def gaussian_kernel(size: int, sigma: float, device: Any = None) -> Any:
    """A normalised 2-D Gaussian over [-1, 1]^2 sampled on ``size`` points per axis."""
    import torch

    axis = torch.linspace(-1, 1, size, device=device)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return g / g.sum()


def sharpen(latent: Any, radius: int, sigma: float, alpha: float) -> Any:
    """Unsharp mask on the unit channel vectors; the per-pixel magnitude is kept."""
    import torch
    import torch.nn.functional as F

    luminance = (torch.linalg.vector_norm(latent, dim=1) + 1e-6)[:, None]
    normalized = latent / luminance
    channels = latent.shape[1]
    size = radius * 2 + 1
    kernel = gaussian_kernel(size, sigma, device=luminance.device) * (alpha * -10)
    center = size // 2
    kernel[center, center] = kernel[center, center] - kernel.sum() + 1.0
    padded = F.pad(normalized, (radius, radius, radius, radius), "reflect")
    weight = kernel.repeat(channels, 1, 1).unsqueeze(1)
    out = F.conv2d(padded, weight, padding=size // 2, groups=channels)[:, :, radius:-radius, radius:-radius]
    return luminance * out


class LatentOperationSharpen(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentOperationSharpen", category="latent/advanced/operations",
                         is_experimental=True,
                         inputs=[io.Int.Input("sharpen_radius", default=9, min=1, max=31, step=1),
                                 io.Float.Input("sigma", default=1.0, min=0.1, max=10.0, step=0.1),
                                 io.Float.Input("alpha", default=0.1, min=0.0, max=5.0, step=0.01)],
                         outputs=[io.LatentOperation.Output()])

    @classmethod
    def execute(cls, sharpen_radius: int, sigma: float, alpha: float) -> io.NodeOutput:
        def operation(latent: Any, **kwargs: Any) -> Any:
            return sharpen(latent, sharpen_radius, sigma, alpha)
        return io.NodeOutput(operation)


class LatentOperationBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentOperationBlend", display_name="Latent Operation Blend",
                         category="model/latent/advanced/operations", is_experimental=True,
                         description="Moves the latent toward a reference latent (resized nearest-neighbour "
                                     "when its size differs).",
                         inputs=[io.Latent.Input("reference"),
                                 io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.0001,
                                                tooltip="0 keeps the latent; 1 gives the reference.")],
                         outputs=[io.LatentOperation.Output()])

    @classmethod
    def execute(cls, reference: Latent, strength: float) -> io.NodeOutput:
        ref = reference["samples"]

        def operation(latent: Any, **kwargs: Any) -> Any:
            import torch
            import torch.nn.functional as F

            if strength == 0:
                return latent
            target = ref.to(latent)
            if target.shape[2:] != latent.shape[2:]:
                target = F.interpolate(target, size=latent.shape[2:], mode="nearest")
            return torch.lerp(latent, repeat_to_batch_size(target, latent.shape[0]), strength)
        return io.NodeOutput(operation)


class ReplaceVideoLatentFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReplaceVideoLatentFrames", display_name="Replace Video Latent Frames",
            category="model/latent/batch",
            inputs=[io.Latent.Input("destination", tooltip="The latent whose frames are replaced."),
                    io.Latent.Input("source", optional=True,
                                    tooltip="The frames to put in; without it the destination is returned."),
                    io.Int.Input("index", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1,
                                 tooltip="First destination frame to replace; negative counts from the end.")],
            outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, destination: Latent, index: int, source: Latent | None = None) -> io.NodeOutput:
        import logging

        if source is None:
            return io.NodeOutput(destination)
        frames, count = destination["samples"].shape[2], source["samples"].shape[2]
        if index < 0:
            index = frames + index
        if index > frames or index + count > frames:
            logging.warning("ReplaceVideoLatentFrames: %d source frames do not fit %d destination frames at %d",
                            count, frames, index)
            return io.NodeOutput(destination)
        samples = destination["samples"].clone()
        samples[:, :, index:index + count] = source["samples"]
        return io.NodeOutput(_with(source, samples))


def match_start_statistics(start: Any, reference: Any) -> Any:
    """Start frames renormalised to the reference frames' mean and std, each frame over channels and space.

    The reference statistics (one mean and one std over all reference frames)
    are first kept within -0.3..+0.35 of each start frame's mean and -0.35..+0.5
    of its std, so a very different reference only nudges the start.
    """
    import torch

    mean = start.mean(dim=(1, 3, 4), keepdim=True)
    std = start.std(dim=(1, 3, 4), keepdim=True)
    target_mean = torch.clamp(reference.mean(), mean - 0.3, mean + 0.35)
    target_std = torch.clamp(reference.std(), std - 0.35, std + 0.5)
    return (start - mean) / (std + 1e-8) * target_std + target_mean


class NormalizeVideoLatentStart(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormalizeVideoLatentStart", category="model/conditioning/video_models",
            description="Brings the first frames of a video latent to the mean and spread of the frames after "
                        "them, so the start does not stand out.",
            inputs=[io.Latent.Input("latent"),
                    io.Int.Input("start_frame_count", default=4, min=1, max=MAX_RESOLUTION, step=1,
                                 tooltip="Latent frames to normalise, from the first."),
                    io.Int.Input("reference_frame_count", default=5, min=1, max=MAX_RESOLUTION, step=1,
                                 tooltip="Latent frames after those whose statistics they take.")],
            outputs=[io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, latent: Latent, start_frame_count: int, reference_frame_count: int) -> io.NodeOutput:
        samples = latent["samples"]
        if samples.shape[2] <= 1:
            return io.NodeOutput(latent)
        samples = samples.clone()
        count = min(reference_frame_count, samples.shape[2] - 1)
        reference = samples[:, :, start_frame_count:start_frame_count + count]
        samples[:, :, :start_frame_count] = match_start_statistics(samples[:, :, :start_frame_count], reference)
        return io.NodeOutput(_with(latent, samples))


# -- nodes.py: transforms -------------------------------------------------------------------------


class LatentRotate:
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "rotate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",),
                             "rotation": (["none", "90 degrees", "180 degrees", "270 degrees"],)}}

    def rotate(self, samples: Latent, rotation: str) -> tuple[Latent]:
        import torch

        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        return (_with(samples, torch.rot90(samples["samples"], k=turns, dims=[3, 2])),)


class LatentFlip:
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "flip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",),
                             "flip_method": (["x-axis: vertically", "y-axis: horizontally"],)}}

    def flip(self, samples: Latent, flip_method: str) -> tuple[Latent]:
        import torch

        if flip_method.startswith("x"):
            return (_with(samples, torch.flip(samples["samples"], dims=[2])),)
        if flip_method.startswith("y"):
            return (_with(samples, torch.flip(samples["samples"], dims=[3])),)
        return (samples.copy(),)


class LatentCrop:
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8}
        pos = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"samples": ("LATENT",), "width": ("INT", size), "height": ("INT", size),
                             "x": ("INT", pos), "y": ("INT", pos)}}

    def crop(self, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        s = samples["samples"]
        # the crop starts at least 8 latent pixels (64 image pixels) before the far edge
        x, y = min(x // 8, s.shape[3] - 8), min(y // 8, s.shape[2] - 8)
        return (_with(samples, s[:, :, y:y + height // 8, x:x + width // 8]),)


class LatentBlend:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples1": ("LATENT",), "samples2": ("LATENT",),
                             "blend_factor": ("FLOAT", {"default": 0.5, "min": 0, "max": 1, "step": 0.01})}}

    def blend(self, samples1: Latent, samples2: Latent, blend_factor: float,
              blend_mode: str = "normal") -> tuple[Latent]:
        from comfy_kernel.nodes.resize import common_upscale

        if blend_mode != "normal":
            raise ValueError(f"Unsupported blend mode: {blend_mode}")
        s1, s2 = samples1["samples"], samples2["samples"]
        if s1.shape != s2.shape:
            s2 = common_upscale(s2, s1.shape[3], s1.shape[2], "bicubic", crop="center")
        return (_with(samples1, s1 * blend_factor + s2 * (1 - blend_factor)),)


NODES = [
    NodeDef("LatentAdd", LatentAdd, None, MODULE),
    NodeDef("LatentSubtract", LatentSubtract, None, MODULE),
    NodeDef("LatentMultiply", LatentMultiply, None, MODULE),
    NodeDef("LatentInterpolate", LatentInterpolate, None, MODULE),
    NodeDef("LatentConcat", LatentConcat, None, MODULE),
    NodeDef("LatentCut", LatentCut, None, MODULE),
    NodeDef("LatentCutToBatch", LatentCutToBatch, None, MODULE),
    NodeDef("LatentApplyOperation", LatentApplyOperation, None, MODULE),
    NodeDef("LatentOperationTonemapReinhard", LatentOperationTonemapReinhard, None, MODULE),
    NodeDef("LatentOperationSharpen", LatentOperationSharpen, None, MODULE),
    NodeDef("LatentOperationBlend", LatentOperationBlend, "Latent Operation Blend", MODULE),
    NodeDef("ReplaceVideoLatentFrames", ReplaceVideoLatentFrames, "Replace Video Latent Frames", MODULE),
    NodeDef("NormalizeVideoLatentStart", NormalizeVideoLatentStart, None, "comfy_extras.nodes_kandinsky5"),
    NodeDef("LatentRotate", LatentRotate, "Rotate Latent", "nodes"),
    NodeDef("LatentFlip", LatentFlip, "Flip Latent", "nodes"),
    NodeDef("LatentCrop", LatentCrop, "Crop Latent", "nodes"),
    NodeDef("LatentBlend", LatentBlend, "Latent Blend", "nodes"),
]
