"""Colour utilities newer than ComfyUI 0.3.64: colour picker, histograms, the curve editor and colour transfer.

The curve editor's value is the kernel's CURVE type (``comfy_kernel.nodes.curves``), the one node packs get
from ``comfy_api.input``.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io
from comfy_kernel.nodes.curves import CurveInput

from .common import NodeDef


class ColorToRGBInt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ColorToRGBInt",
            display_name="Color Picker",
            category="utilities",
            description="A picked colour as a 0xRRGGBB integer, its #RRGGBB hex string and its alpha.",
            inputs=[io.Color.Input("color")],
            outputs=[io.Int.Output(display_name="rgb_int"), io.Color.Output(display_name="hex"),
                     io.Float.Output(display_name="alpha")],
        )

    @classmethod
    def execute(cls, color: str) -> io.NodeOutput:
        bad = "Color must be in format #RRGGBB or #RRGGBBAA"
        if not isinstance(color, str) or len(color) not in (7, 9) or color[0] != "#":
            raise ValueError(bad)
        try:
            int(color[1:], 16)
        except ValueError:
            raise ValueError(bad) from None
        alpha = 1.0
        if len(color) == 9:
            alpha = int(color[7:9], 16) / 255.0
            color = color[:7]
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
        return io.NodeOutput(r * 256 * 256 + g * 256 + b, color, alpha)


def histograms(image: Any) -> tuple[list[int], ...]:
    """256-bin histograms (rgb average, BT.709 luminance, red, green, blue) of the first image of a batch."""
    import numpy as np

    img = image[0].cpu().numpy()
    values = np.clip(img * 255, 0, 255).astype(np.uint8)

    def count(data: Any) -> Any:
        return np.bincount(data.ravel(), minlength=256)[:256]

    red, green, blue = (count(values[:, :, c]) for c in range(3))
    luminance = 0.2126 * img[:, :, 0] + 0.7152 * img[:, :, 1] + 0.0722 * img[:, :, 2]
    lum = count(np.clip(luminance * 255, 0, 255).astype(np.uint8))
    return (((red + green + blue) // 3).tolist(), lum.tolist(), red.tolist(), green.tolist(), blue.tolist())


class ImageHistogram(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageHistogram",
            display_name="Image Histogram",
            category="utils",
            inputs=[io.Image.Input("image")],
            outputs=[io.Histogram.Output("rgb", display_name="rgb"), io.Histogram.Output("luminance", display_name="luminance"),
                     io.Histogram.Output("red", display_name="red"), io.Histogram.Output("green", display_name="green"),
                     io.Histogram.Output("blue", display_name="blue")],
        )

    @classmethod
    def execute(cls, image: Any) -> io.NodeOutput:
        return io.NodeOutput(*histograms(image))


class CurveEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CurveEditor",
            display_name="Curve Editor",
            category="utils",
            inputs=[
                io.Curve.Input("curve"),
                io.Histogram.Input("histogram", optional=True),
            ],
            outputs=[io.Curve.Output("curve", display_name="curve")],
        )

    @classmethod
    def execute(cls, curve: Any, histogram: Any = None) -> io.NodeOutput:
        result = CurveInput.from_raw(curve)  # the kernel's CURVE value (comfy_api.input's CurveInput)
        if histogram is None:
            return io.NodeOutput(result)
        return io.NodeOutput(result, ui={"histogram": list(histogram)})


# --- colour transfer ----------------------------------------------------------------------------

_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_XYZ_TO_RGB = ((3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
               (-0.9692549499965682, 1.8759900014898907, 0.0415559265582928),
               (0.0556466391351772, -0.2040413383665112, 1.0573110696453443))
_WHITE = (0.95047, 1.0, 1.08883)


def _mix(matrix: tuple, c: Any) -> Any:
    import torch

    return torch.einsum("oi, bihw -> bohw", torch.tensor(matrix, dtype=c.dtype, device=c.device), c)


def rgb_to_lab(rgb: Any) -> Any:
    """CIE L*a*b* (D65) of sRGB [B, 3, H, W] in [0, 1]."""
    import torch

    linear = torch.where(rgb > 0.04045, torch.pow(((rgb + 0.055).clamp(min=0.0) / 1.055), 2.4), rgb / 12.92)
    xyz = _mix(_RGB_TO_XYZ, linear)
    xyz = xyz / torch.tensor(_WHITE, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    threshold = 0.008856
    f = torch.where(xyz > threshold, torch.pow(xyz.clamp(min=threshold), 1 / 3), 7.787 * xyz + 4 / 29)
    return torch.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: Any) -> Any:
    """sRGB [B, 3, H, W] of L*a*b*, clamped to [0, 1]."""
    import torch

    fy = (lab[:, 0] + 16.0) / 116.0
    f = torch.stack([fy + lab[:, 1] / 500.0, fy, (fy - lab[:, 2] / 200.0).clamp(min=0)], 1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 4 / 29) / 7.787)
    xyz = xyz * torch.tensor(_WHITE, dtype=lab.dtype, device=lab.device).view(1, 3, 1, 1)
    linear = _mix(_XYZ_TO_RGB, xyz)
    rgb = torch.where(linear > 0.0031308, 1.055 * torch.pow(linear.clamp(min=0.0031308), 1 / 2.4) - 0.055,
                      12.92 * linear)
    return rgb.clamp(0, 1)


def _stats(flat: Any, reinhard: bool, eps: float) -> tuple[Any, Any]:
    mean = flat.mean(dim=-1, keepdim=True)
    if reinhard:
        return mean, flat.std(dim=-1, keepdim=True, unbiased=False).clamp_min(eps)
    centred = flat - mean
    return mean, centred @ centred.T / flat.shape[-1]


def _pooled_stats(frames: list[Any], reinhard: bool, eps: float) -> tuple[Any, Any]:
    """Mean and std (Reinhard) or covariance (MKL) pooled over frames, each [3, HW]."""
    import torch

    mean = sum(f.mean(dim=-1, keepdim=True) for f in frames) / len(frames)
    if reinhard:
        var = sum(((f - mean) ** 2).mean(dim=-1, keepdim=True) for f in frames) / len(frames)
        return mean, torch.sqrt(var).clamp_min(eps)
    return mean, sum((f - mean) @ (f - mean).T / f.shape[-1] for f in frames) / len(frames)


def _mkl(cov_s: Any, cov_r: Any, eps: float) -> Any:
    """Monge-Kantorovich linear map taking covariance ``cov_s`` to ``cov_r``."""
    import torch

    val_s, vec_s = torch.linalg.eigh(cov_s)
    sqrt_s = torch.sqrt(val_s.clamp_min(0)).clamp_min(eps)
    scaled = vec_s * sqrt_s.unsqueeze(0)
    val_m, vec_m = torch.linalg.eigh(scaled.T @ cov_r @ scaled)
    half = (vec_m * torch.sqrt(val_m.clamp_min(0)).unsqueeze(0)) @ vec_m.T
    inv = vec_s * (1.0 / sqrt_s).unsqueeze(0)
    return inv @ half @ inv.T


def _histogram_cdf(frames: list[Any], bins: int = 256) -> Any:
    import torch

    hist = torch.zeros(frames[0].shape[0], bins, dtype=torch.float32, device=frames[0].device)
    for frame in frames:
        idx = (frame * (bins - 1)).long().clamp(0, bins - 1)
        hist.scatter_add_(1, idx, torch.ones_like(frame))
    cdf = hist.cumsum(1)
    return cdf / cdf[:, -1:]


def color_transfer(target: Any, ref: Any, method: str, mode: str, index: int, strength: float) -> Any:
    """ComfyUI's ColorTransfer on IMAGE batches: Reinhard or MKL in Lab, or histogram matching per channel."""
    import torch

    eps = 1e-6
    batch, height, width, channels = target.shape
    frames = [target[i].float().permute(2, 0, 1) for i in range(batch)]
    refs = [ref[i].float().permute(2, 0, 1) for i in range(ref.shape[0])]
    out = torch.empty(batch, height, width, channels, dtype=torch.float32)
    if method == "histogram":
        flat = [f.reshape(channels, -1) for f in frames]
        ref_flat = [r.reshape(channels, -1) for r in refs]
        shared = None
        if mode != "per_frame":
            source = [flat[min(index, batch - 1)]] if mode == "target_frame" else flat
            shared = torch.searchsorted(_histogram_cdf(ref_flat), _histogram_cdf(source)).clamp_max_(255).float() / 255
        for i in range(batch):
            lut = shared
            if lut is None:
                lut = torch.searchsorted(_histogram_cdf([ref_flat[min(i, len(refs) - 1)]]),
                                         _histogram_cdf([flat[i]])).clamp_max_(255).float() / 255
            matched = lut.gather(1, (flat[i] * 255).long().clamp(0, 255)).view(channels, height, width)
            result = matched if strength == 1.0 else torch.lerp(frames[i], matched, strength)
            out[i] = result.permute(1, 2, 0).clamp_(0, 1)
        return out

    reinhard = method == "reinhard_lab"
    labs = [rgb_to_lab(f.unsqueeze(0)).view(3, -1) for f in frames]
    ref_labs = [rgb_to_lab(r.unsqueeze(0)).view(3, -1) for r in refs]
    pooled_ref = _pooled_stats(ref_labs, reinhard, eps) if (len(refs) == 1 or mode != "per_frame") else None
    shared = None
    if mode != "per_frame":
        if mode == "target_frame":
            s_mean, s_sc = _stats(labs[min(index, batch - 1)], reinhard, eps)
        else:
            s_mean, s_sc = _pooled_stats(labs, reinhard, eps)
        r_mean, r_sc = pooled_ref
        if reinhard:
            scale = r_sc / s_sc
            shared = (scale, r_mean - scale * s_mean, None)
        else:
            t = _mkl(s_sc, r_sc, eps)
            shared = (None, r_mean - t @ s_mean, t)
    for i in range(batch):
        src = labs[i]
        if shared is not None:
            scale, offset, t = shared
            corrected = src * scale + offset if reinhard else t @ src + offset
        else:
            s_mean, s_sc = _stats(src, reinhard, eps)
            r_mean, r_sc = pooled_ref if pooled_ref is not None else _stats(ref_labs[min(i, len(refs) - 1)],
                                                                           reinhard, eps)
            centred = src - s_mean
            corrected = (centred * (r_sc / s_sc) + r_mean if reinhard
                         else _mkl(centred @ centred.T / src.shape[-1], r_sc, eps) @ centred + r_mean)
        lab = corrected.view(1, 3, height, width)
        if strength != 1.0:
            lab = torch.lerp(src.view(1, 3, height, width), lab, strength)
        out[i] = lab_to_rgb(lab).squeeze(0).permute(1, 2, 0).clamp_(0, 1)
    return out


class ColorTransfer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ColorTransfer",
            display_name="Transfer Color",
            category="image/filters",
            description="Makes the colours of image_target match those of image_ref.",
            search_aliases=["color match", "color grading", "color correction", "match colors", "color transform",
                            "mkl", "reinhard", "histogram"],
            inputs=[
                io.Image.Input("image_target"),
                io.Image.Input("image_ref"),
                io.Combo.Input("method", options=["reinhard_lab", "mkl_lab", "histogram"]),
                io.DynamicCombo.Input("source_stats", options=[
                    io.DynamicCombo.Option("per_frame", []),
                    io.DynamicCombo.Option("uniform", []),
                    io.DynamicCombo.Option("target_frame", [io.Int.Input("target_index", default=0, min=0, max=10000)]),
                ]),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image_target: Any, image_ref: Any, method: str, source_stats: dict[str, Any],
                strength: float = 1.0) -> io.NodeOutput:
        if strength == 0 or image_ref is None:
            return io.NodeOutput(image_target)
        mode = source_stats["source_stats"]
        out = color_transfer(image_target.cpu(), image_ref.cpu(), method, mode, source_stats.get("target_index", 0),
                             strength)
        return io.NodeOutput(out.to(image_target.dtype))


NODES = [
    NodeDef("ColorToRGBInt", ColorToRGBInt, None, "comfy_extras.nodes_color"),
    NodeDef("ImageHistogram", ImageHistogram, None, "comfy_extras.nodes_curve"),
    NodeDef("CurveEditor", CurveEditor, None, "comfy_extras.nodes_curve"),
    NodeDef("ColorTransfer", ColorTransfer, None, "comfy_extras.nodes_post_processing"),
]
