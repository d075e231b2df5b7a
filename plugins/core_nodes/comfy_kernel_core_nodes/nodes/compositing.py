"""Alpha compositing: the Porter-Duff operators and splitting/joining an alpha channel.

MASK here is ComfyUI's convention, 1 - alpha: the operators convert masks to
alpha, work on premultiplied colour, and convert back.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io
from comfy_kernel.nodes.resize import common_upscale

from .common import NodeDef
from .image_ops import resize_mask

PORTER_DUFF_MODES = ["ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN",
                     "MULTIPLY", "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR"]


def porter_duff(src: Any, src_mask: Any, dst: Any, dst_mask: Any, mode: str) -> tuple[Any, Any]:
    """Composite one [H, W, C] source over a destination by ``mode``; masks are [H, W, 1] (1 - alpha)."""
    import torch

    sa, da = 1 - src_mask, 1 - dst_mask
    s, d = src * sa, dst * da
    if mode == "ADD":
        alpha, color = torch.clamp(sa + da, 0, 1), torch.clamp(s + d, 0, 1)
    elif mode == "CLEAR":
        alpha, color = torch.zeros_like(da), torch.zeros_like(d)
    elif mode == "DARKEN":
        alpha, color = sa + da - sa * da, (1 - da) * s + (1 - sa) * d + torch.min(s, d)
    elif mode == "DST":
        alpha, color = da, d
    elif mode == "DST_ATOP":
        alpha, color = sa, sa * d + (1 - da) * s
    elif mode == "DST_IN":
        alpha, color = sa * da, d * sa
    elif mode == "DST_OUT":
        alpha, color = (1 - sa) * da, (1 - sa) * d
    elif mode == "DST_OVER":
        alpha, color = da + (1 - da) * sa, d + (1 - da) * s
    elif mode == "LIGHTEN":
        alpha, color = sa + da - sa * da, (1 - da) * s + (1 - sa) * d + torch.max(s, d)
    elif mode == "MULTIPLY":
        alpha, color = sa * da, s * d
    elif mode == "OVERLAY":
        alpha = sa + da - sa * da
        color = torch.where(2 * d < da, 2 * s * d, sa * da - 2 * (da - s) * (sa - d))
    elif mode == "SCREEN":
        alpha, color = sa + da - sa * da, s + d - s * d
    elif mode == "SRC":
        alpha, color = sa, s
    elif mode == "SRC_ATOP":
        alpha, color = da, da * s + (1 - sa) * d
    elif mode == "SRC_IN":
        alpha, color = sa * da, s * da
    elif mode == "SRC_OUT":
        alpha, color = (1 - da) * sa, (1 - da) * s
    elif mode == "SRC_OVER":
        alpha, color = sa + (1 - sa) * da, s + (1 - sa) * d
    elif mode == "XOR":
        alpha, color = (1 - da) * sa + (1 - sa) * da, (1 - da) * s + (1 - sa) * d
    else:
        raise ValueError(f"Unknown Porter-Duff mode {mode!r}")
    color = torch.where(alpha > 1e-5, color / alpha, torch.zeros_like(color))
    return torch.clamp(color, 0, 1), 1 - alpha


def _fit(item: Any, height: int, width: int) -> Any:
    """[H, W, C] resized (bicubic, centre crop) to (height, width)."""
    return common_upscale(item.unsqueeze(0).permute(0, 3, 1, 2), width, height, "bicubic", "center"
                          ).permute(0, 2, 3, 1).squeeze(0)


class PorterDuffImageComposite(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PorterDuffImageComposite",
            display_name="Porter-Duff Image Composite",
            category="mask/compositing",
            inputs=[
                io.Image.Input("source"),
                io.Mask.Input("source_alpha"),
                io.Image.Input("destination"),
                io.Mask.Input("destination_alpha"),
                io.Combo.Input("mode", options=PORTER_DUFF_MODES, default="DST"),
            ],
            outputs=[io.Image.Output(), io.Mask.Output()],
        )

    @classmethod
    def execute(cls, source: Any, source_alpha: Any, destination: Any, destination_alpha: Any,
                mode: str) -> io.NodeOutput:
        import torch

        count = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
        images, masks = [], []
        for i in range(count):
            src, dst = source[i], destination[i]
            if src.shape[2] != dst.shape[2]:
                raise ValueError("source and destination need the same number of channels")
            src_mask, dst_mask = source_alpha[i].unsqueeze(2), destination_alpha[i].unsqueeze(2)
            if dst_mask.shape[:2] != dst.shape[:2]:
                dst_mask = _fit(dst_mask, dst.shape[0], dst.shape[1])
            if src.shape != dst.shape:
                src = _fit(src, dst.shape[0], dst.shape[1])
            if src_mask.shape != dst_mask.shape:
                src_mask = _fit(src_mask, dst_mask.shape[0], dst_mask.shape[1])
            image, mask = porter_duff(src, src_mask, dst, dst_mask, mode)
            images.append(image)
            masks.append(mask.squeeze(2))
        return io.NodeOutput(torch.stack(images), torch.stack(masks))


class SplitImageWithAlpha(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SplitImageWithAlpha",
            display_name="Split Image with Alpha",
            category="mask/compositing",
            inputs=[io.Image.Input("image")],
            outputs=[io.Image.Output(), io.Mask.Output()],
        )

    @classmethod
    def execute(cls, image: Any) -> io.NodeOutput:
        import torch

        rgb = [item[:, :, :3] for item in image]
        alpha = [item[:, :, 3] if item.shape[2] > 3 else torch.ones_like(item[:, :, 0]) for item in image]
        return io.NodeOutput(torch.stack(rgb), 1.0 - torch.stack(alpha))


class JoinImageWithAlpha(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="JoinImageWithAlpha",
            display_name="Join Image with Alpha",
            category="mask/compositing",
            inputs=[io.Image.Input("image"), io.Mask.Input("alpha")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image: Any, alpha: Any) -> io.NodeOutput:
        import torch

        count = min(len(image), len(alpha))
        alpha = 1.0 - resize_mask(alpha, image.shape[1], image.shape[2])
        return io.NodeOutput(torch.stack([torch.cat((image[i][:, :, :3], alpha[i].unsqueeze(2)), dim=2)
                                          for i in range(count)]))


NODES = [
    NodeDef("PorterDuffImageComposite", PorterDuffImageComposite, None, "comfy_extras.nodes_compositing"),
    NodeDef("SplitImageWithAlpha", SplitImageWithAlpha, None, "comfy_extras.nodes_compositing"),
    NodeDef("JoinImageWithAlpha", JoinImageWithAlpha, None, "comfy_extras.nodes_compositing"),
]
