"""Pixel filters: blend, blur, sharpen, quantize, noise, morphology, YCbCr split/join and Canny edges.

ComfyUI runs morphology, the YCbCr conversion and Canny through kornia; here
they are written directly in torch with the same maths (flat structuring
element with out-of-image pixels ignored; BT.601 YCbCr with the 0.564/0.713
chroma scales; Gaussian 5x5 sigma 1, Sobel, non-maximum suppression and
hysteresis), so the outputs equal ComfyUI's for the same input.
"""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io
from comfy_kernel.nodes.resize import common_upscale

from .common import SEED_MAX, NodeDef
from .image_ops import alpha_fix

BLEND_MODES = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
DITHER_MODES = ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]
MORPHOLOGY_OPS = ["erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"]


def blend(img1: Any, img2: Any, mode: str) -> Any:
    import torch

    if mode == "normal":
        return img2
    if mode == "multiply":
        return img1 * img2
    if mode == "screen":
        return 1 - (1 - img1) * (1 - img2)
    if mode == "overlay":
        return torch.where(img1 <= 0.5, 2 * img1 * img2, 1 - 2 * (1 - img1) * (1 - img2))
    if mode == "soft_light":
        g = torch.where(img1 <= 0.25, ((16 * img1 - 12) * img1 + 4) * img1, torch.sqrt(img1))
        return torch.where(img2 <= 0.5, img1 - (1 - 2 * img2) * img1 * (1 - img1), img1 + (2 * img2 - 1) * (g - img1))
    if mode == "difference":
        return img1 - img2
    raise ValueError(f"Unsupported blend mode: {mode}")


class ImageBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBlend",
            category="image/postprocessing",
            inputs=[
                io.Image.Input("image1"),
                io.Image.Input("image2"),
                io.Float.Input("blend_factor", default=0.5, min=0.0, max=1.0, step=0.01),
                io.Combo.Input("blend_mode", options=BLEND_MODES),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image1: Any, image2: Any, blend_factor: float, blend_mode: str) -> io.NodeOutput:
        import torch

        image1, image2 = alpha_fix(image1, image2)
        image2 = image2.to(image1.device)
        if image1.shape != image2.shape:
            image2 = common_upscale(image2.permute(0, 3, 1, 2), image1.shape[2], image1.shape[1], "bicubic",
                                    "center").permute(0, 2, 3, 1)
        blended = image1 * (1 - blend_factor) + blend(image1, image2, blend_mode) * blend_factor
        return io.NodeOutput(torch.clamp(blended, 0, 1))


def gaussian_kernel(size: int, sigma: float, device: Any = None) -> Any:
    """Square Gaussian over [-1, 1]^2 sampled on ``size`` points per side, summing to 1 (ComfyUI's blur kernel)."""
    import torch

    line = torch.linspace(-1, 1, size, device=device)
    x, y = torch.meshgrid(line, line, indexing="ij")
    d = torch.sqrt(x * x + y * y)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return g / g.sum()


def _depthwise(image: Any, kernel: Any, radius: int) -> Any:
    """Reflect-pad by ``radius``, convolve each channel with ``kernel`` (padded again by half its size), crop."""
    import torch.nn.functional as F

    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), "reflect")
    weights = kernel.repeat(channels, 1, 1).unsqueeze(1)
    out = F.conv2d(padded, weights, padding=kernel.shape[-1] // 2, groups=channels)
    return out[:, :, radius:-radius, radius:-radius]


def _compute_device() -> Any:
    try:
        from comfy_kernel.gpu.workers import current_device

        return current_device().torch_device
    except Exception:
        return "cpu"


class ImageBlur(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBlur",
            category="image/postprocessing",
            inputs=[
                io.Image.Input("image"),
                io.Int.Input("blur_radius", default=1, min=1, max=31, step=1),
                io.Float.Input("sigma", default=1.0, min=0.1, max=10.0, step=0.1),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image: Any, blur_radius: int, sigma: float) -> io.NodeOutput:
        if blur_radius == 0:
            return io.NodeOutput(image)
        source = image.device
        x = image.to(_compute_device()).permute(0, 3, 1, 2)
        kernel = gaussian_kernel(blur_radius * 2 + 1, sigma, device=x.device)
        return io.NodeOutput(_depthwise(x, kernel, blur_radius).permute(0, 2, 3, 1).to(source))


class ImageSharpen(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageSharpen",
            category="image/postprocessing",
            inputs=[
                io.Image.Input("image"),
                io.Int.Input("sharpen_radius", default=1, min=1, max=31, step=1),
                io.Float.Input("sigma", default=1.0, min=0.1, max=10.0, step=0.01),
                io.Float.Input("alpha", default=1.0, min=0.0, max=5.0, step=0.01),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image: Any, sharpen_radius: int, sigma: float, alpha: float) -> io.NodeOutput:
        import torch

        if sharpen_radius == 0:
            return io.NodeOutput(image)
        source = image.device
        x = image.to(_compute_device()).permute(0, 3, 1, 2)
        size = sharpen_radius * 2 + 1
        # An unsharp kernel: a negative Gaussian whose centre is raised so the whole kernel sums to 1.
        kernel = (gaussian_kernel(size, sigma, device=x.device) * -(alpha * 10)).to(dtype=x.dtype)
        centre = size // 2
        kernel[centre, centre] = kernel[centre, centre] - kernel.sum() + 1.0
        out = _depthwise(x, kernel, sharpen_radius).permute(0, 2, 3, 1)
        return io.NodeOutput(torch.clamp(out, 0, 1).to(source))


def _bayer_matrix(level: int) -> Any:
    import numpy as np

    if level == 0:
        return np.zeros((1, 1), "float32")
    q = 4 ** level
    m = q * _bayer_matrix(level - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


def _bayer_dither(im: Any, palette_image: Any, order: int) -> Any:
    """Ordered dithering: add a tiled Bayer threshold map (scaled to the palette's spacing), then map to the palette."""
    import numpy as np
    import torch
    from PIL import Image

    colors = len(palette_image.getpalette()) // 3
    spread = 2 * 256 / colors
    matrix = torch.from_numpy(spread * _bayer_matrix(int(math.log2(order))) + 0.5)
    pixels = torch.from_numpy(np.array(im).astype(np.float32))
    tiles_y = math.ceil(pixels.shape[0] / matrix.shape[0])
    tiles_x = math.ceil(pixels.shape[1] / matrix.shape[1])
    tiled = matrix.tile(tiles_y, tiles_x).unsqueeze(-1)
    pixels.add_(tiled[:pixels.shape[0], :pixels.shape[1]]).clamp_(0, 255)
    dithered = Image.fromarray(pixels.to(dtype=torch.uint8).cpu().numpy())
    return dithered.quantize(palette=palette_image, dither=Image.Dither.NONE)


class ImageQuantize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageQuantize",
            category="image/postprocessing",
            inputs=[
                io.Image.Input("image"),
                io.Int.Input("colors", default=256, min=1, max=256, step=1),
                io.Combo.Input("dither", options=DITHER_MODES),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image: Any, colors: int, dither: str) -> io.NodeOutput:
        import numpy as np
        import torch
        from PIL import Image

        result = torch.zeros_like(image)
        for b in range(image.shape[0]):
            im = Image.fromarray((image[b] * 255).to(torch.uint8).cpu().numpy(), mode="RGB")
            # Pillow needs a palette image to map onto; median cut of the image itself gives it.
            palette = im.quantize(colors=colors)
            if dither == "none":
                quantized = im.quantize(palette=palette, dither=Image.Dither.NONE)
            elif dither == "floyd-steinberg":
                quantized = im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
            else:
                quantized = _bayer_dither(im, palette, int(dither.split("-")[-1]))
            result[b] = torch.tensor(np.array(quantized.convert("RGB"))).float() / 255
        return io.NodeOutput(result)


class ImageAddNoise:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE",),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "Seed of the noise; the same seed gives the same noise."}),
            "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    def repeat(self, image: Any, seed: int, strength: float) -> tuple[Any]:
        import torch

        # The noise is drawn on the CPU from a generator seeded like torch.manual_seed(seed), as ComfyUI does.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
        return (torch.clip(image + strength * noise, min=0.0, max=1.0),)


# --- morphology --------------------------------------------------------------------------------


def _window_extreme(image: Any, size: int, largest: bool, reflected: bool) -> Any:
    """Max (or min) over a ``size`` x ``size`` window; pixels outside the image take no part.

    The window's anchor is ``size // 2``; a dilation reflects the window about
    it (max of f(x - b)), an erosion does not, which only matters for even sizes.
    """
    import torch.nn.functional as F

    anchor = size // 2
    before, after = (size - anchor - 1, anchor) if reflected else (anchor, size - anchor - 1)
    x = image if largest else -image
    x = F.pad(x, (before, after, before, after), mode="constant", value=-math.inf)
    out = F.max_pool2d(x, size, stride=1)
    return out if largest else -out


def dilate(image: Any, size: int) -> Any:
    return _window_extreme(image, size, largest=True, reflected=True)


def erode(image: Any, size: int) -> Any:
    return _window_extreme(image, size, largest=False, reflected=False)


def morphology(image: Any, operation: str, size: int) -> Any:
    """ComfyUI's Morphology operations on [B, C, H, W] with a flat ``size`` x ``size`` element."""
    if operation == "erode":
        return erode(image, size)
    if operation == "dilate":
        return dilate(image, size)
    if operation == "open":
        return dilate(erode(image, size), size)
    if operation == "close":
        return erode(dilate(image, size), size)
    if operation == "gradient":
        return dilate(image, size) - erode(image, size)
    if operation == "top_hat":
        return image - dilate(erode(image, size), size)
    if operation == "bottom_hat":
        return erode(dilate(image, size), size) - image
    raise ValueError(f"Invalid operation {operation} for morphology. Must be one of {', '.join(MORPHOLOGY_OPS)}")


class Morphology(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Morphology",
            display_name="ImageMorphology",
            category="image/postprocessing",
            inputs=[
                io.Image.Input("image"),
                io.Combo.Input("operation", options=MORPHOLOGY_OPS),
                io.Int.Input("kernel_size", default=3, min=3, max=999, step=1),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image: Any, operation: str, kernel_size: int) -> io.NodeOutput:
        source = image.device
        out = morphology(image.to(_compute_device()).movedim(-1, 1), operation, kernel_size)
        return io.NodeOutput(out.to(source).movedim(1, -1))


# --- YCbCr ------------------------------------------------------------------------------------


def rgb_to_ycbcr(rgb: Any) -> Any:
    """Full-range BT.601 YCbCr of [..., 3, H, W] RGB in [0, 1]; chroma centred on 0.5."""
    import torch

    r, g, b = rgb[..., 0, :, :], rgb[..., 1, :, :], rgb[..., 2, :, :]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5], -3)


def ycbcr_to_rgb(ycbcr: Any) -> Any:
    """Inverse of :func:`rgb_to_ycbcr` (exact inverse coefficients), clamped to [0, 1]."""
    import torch

    y, cb, cr = ycbcr[..., 0, :, :], ycbcr[..., 1, :, :] - 0.5, ycbcr[..., 2, :, :] - 0.5
    r = y + 1.4025245442 * cr
    g = y - 0.7144034731 * cr - 0.3443401356 * cb
    b = y + 1.7730496454 * cb
    return torch.stack([r, g, b], -3).clamp(0, 1)


class ImageRGBToYUV(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageRGBToYUV",
            category="image/batch",
            inputs=[io.Image.Input("image")],
            outputs=[io.Image.Output(display_name="Y"), io.Image.Output(display_name="U"),
                     io.Image.Output(display_name="V")],
        )

    @classmethod
    def execute(cls, image: Any) -> io.NodeOutput:
        out = rgb_to_ycbcr(image.movedim(-1, 1)).movedim(1, -1)
        return io.NodeOutput(out[..., 0:1].expand_as(image), out[..., 1:2].expand_as(image),
                             out[..., 2:3].expand_as(image))


class ImageYUVToRGB(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageYUVToRGB",
            category="image/batch",
            inputs=[io.Image.Input("Y"), io.Image.Input("U"), io.Image.Input("V")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, Y: Any, U: Any, V: Any) -> io.NodeOutput:  # noqa: N803 - ComfyUI's input names
        import torch

        planes = torch.cat([torch.mean(p, dim=-1, keepdim=True) for p in (Y, U, V)], dim=-1)
        return io.NodeOutput(ycbcr_to_rgb(planes.movedim(-1, 1)).movedim(1, -1))


# --- Canny ------------------------------------------------------------------------------------


def _gaussian_1d(size: int, sigma: float, device: Any, dtype: Any) -> Any:
    import torch

    x = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _separable_blur(image: Any, size: int = 5, sigma: float = 1.0) -> Any:
    """Gaussian blur of [B, 1, H, W], rows then columns, reflecting at the border."""
    import torch.nn.functional as F

    k = _gaussian_1d(size, sigma, image.device, image.dtype)
    r = size // 2
    out = F.conv2d(F.pad(image, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, size))
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, size, 1))


def _sobel(image: Any) -> tuple[Any, Any]:
    """Unnormalised Sobel derivatives (x, y) of [B, 1, H, W], replicating the border."""
    import torch
    import torch.nn.functional as F

    kernel = torch.tensor([[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                           [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]],
                          device=image.device, dtype=image.dtype)
    out = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernel[:, None])
    return out[:, 0:1], out[:, 1:2]


# Neighbour offsets (dy, dx) for the 8 directions k * 45 degrees, then the pixel itself.
_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 0))


def canny(image: Any, low: float, high: float, eps: float = 1e-6) -> Any:
    """Binary Canny edges [B, 1, H, W] of an RGB or grey [B, C, H, W] image in [0, 1].

    Thresholds compare against the unnormalised Sobel magnitude of the
    blurred grey image. Non-maximum suppression keeps a pixel that beats its
    two neighbours along the gradient (rounded to 45 degrees), ties going to
    the left/upper pixel on horizontal/vertical gradients; hysteresis keeps
    weak pixels 8-connected to strong ones.
    """
    import torch
    import torch.nn.functional as F

    if image.shape[1] == 3:
        r, g, b = image.unbind(dim=1)
        grey = torch.addcmul(torch.addcmul(r * 0.299, g, torch.tensor(0.587, dtype=image.dtype)), b,
                             torch.tensor(0.114, dtype=image.dtype)).unsqueeze(1)
    else:
        grey = image
    gx, gy = _sobel(_separable_blur(grey))

    padded = torch.sqrt(F.pad(gx, (1, 1, 1, 1)) ** 2 + F.pad(gy, (1, 1, 1, 1)) ** 2 + eps)
    height, width = gx.shape[-2:]
    window = torch.stack([padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in _NEIGHBOURS], 2)
    magnitude = window[:, :, 8]
    octant = (torch.nan_to_num(torch.atan2(gy, gx)) * (4 / math.pi)).round()
    forward = (octant % 8).long()
    backward = ((octant + 4) % 8).long()
    pair = torch.gather(window, 2, torch.stack([forward, backward], 2))

    def beats(neighbour: Any, direction: Any) -> Any:
        tie_ok = (direction == 0) | (direction == 2)
        return (magnitude > neighbour) | (tie_ok & (magnitude == neighbour))

    keep = beats(pair[:, :, 0], forward) & beats(pair[:, :, 1], backward) & (magnitude > padded[..., :1, :1])
    magnitude = magnitude * keep

    dtype = magnitude.dtype
    edges = ((magnitude > low).to(dtype) + (magnitude > high).to(dtype)) * 0.5
    kernels = torch.zeros(8, 1, 3, 3, device=edges.device, dtype=dtype)
    for i, (dy, dx) in enumerate(_NEIGHBOURS[:8]):
        kernels[i, 0, 1 + dy, 1 + dx] = 1.0
    previous = -torch.ones_like(edges)
    while ((previous - edges).abs() != 0).any():
        previous = edges
        weak = (edges == 0.5).to(dtype)
        strong = (edges == 1).to(dtype)
        linked = (F.conv2d(edges, kernels, padding=1) == 1).any(1, keepdim=True).to(dtype)
        linked = linked * weak + strong
        edges = linked + (linked == 0) * weak * 0.5
    return (edges == 1).to(dtype)


class Canny(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Canny",
            category="image/preprocessors",
            inputs=[
                io.Image.Input("image"),
                io.Float.Input("low_threshold", default=0.4, min=0.01, max=0.99, step=0.01),
                io.Float.Input("high_threshold", default=0.8, min=0.01, max=0.99, step=0.01),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def validate_inputs(cls, low_threshold: float = 0.4, high_threshold: float = 0.8, **_: Any) -> bool | str:
        if low_threshold > high_threshold:
            return f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})"
        return True

    @classmethod
    def execute(cls, image: Any, low_threshold: float, high_threshold: float) -> io.NodeOutput:
        source = image.device
        edges = canny(image.to(_compute_device()).movedim(-1, 1), low_threshold, high_threshold)
        return io.NodeOutput(edges.to(source).repeat(1, 3, 1, 1).movedim(1, -1))


NODES = [
    NodeDef("ImageBlend", ImageBlend, None, "comfy_extras.nodes_post_processing"),
    NodeDef("ImageBlur", ImageBlur, None, "comfy_extras.nodes_post_processing"),
    NodeDef("ImageSharpen", ImageSharpen, None, "comfy_extras.nodes_post_processing"),
    NodeDef("ImageQuantize", ImageQuantize, None, "comfy_extras.nodes_post_processing"),
    NodeDef("ImageAddNoise", ImageAddNoise, "ImageAddNoise", "comfy_extras.nodes_images"),
    NodeDef("Morphology", Morphology, None, "comfy_extras.nodes_morphology"),
    NodeDef("ImageRGBToYUV", ImageRGBToYUV, None, "comfy_extras.nodes_morphology"),
    NodeDef("ImageYUVToRGB", ImageYUVToRGB, None, "comfy_extras.nodes_morphology"),
    NodeDef("Canny", Canny, None, "comfy_extras.nodes_canny"),
]
