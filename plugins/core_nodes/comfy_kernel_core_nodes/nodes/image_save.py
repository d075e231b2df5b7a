"""Savers beyond SaveImage: animated WEBP/PNG, SVG, SaveImageAdvanced (PNG 8/16-bit, EXR, AVIF), ImageCompare.

Names, counters, path confinement and the ``--disable-metadata`` switch come
from :mod:`.save`, so every saver names and reserves files the same way.
Formats Pillow cannot write (16-bit colour PNG, float EXR) are encoded here
directly: both are short, well specified container formats.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import Any

from comfy_kernel.nodes import io

from . import context
from .common import NodeDef
from .save import next_counter, reserve, split_prefix, to_uint8

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def _metadata_enabled() -> bool:
    return not context.option("disable_metadata", False)


def _start(prefix: str, images: Any) -> tuple[str, str, str]:
    """Output folder, file name and subfolder for ``prefix`` (tokens use the first image's size)."""
    height, width = (images[0].shape[0], images[0].shape[1]) if len(images) else (0, 0)
    return split_prefix(prefix, context.output_dir(), width, height)


def _animated_frames(images: Any) -> list[Any]:
    from PIL import Image

    return [Image.fromarray(to_uint8(image)) for image in images]


class SaveAnimatedWEBP:
    CATEGORY = "image/animation"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "images": ("IMAGE",),
            "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
            "lossless": ("BOOLEAN", {"default": True}),
            "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
            "method": (list(WEBP_METHODS),),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images: Any, fps: float, filename_prefix: str, lossless: bool, quality: int, method: str,
                    num_frames: int = 0, prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        folder, filename, subfolder = _start(filename_prefix, images)
        frames = _animated_frames(images)
        exif = frames[0].getexif()
        if _metadata_enabled():
            # ComfyUI's layout: the prompt in Make (0x0110), extra_pnginfo entries from Model (0x010f) downwards.
            if prompt is not None:
                exif[0x0110] = f"prompt:{json.dumps(prompt)}"
            if extra_pnginfo is not None:
                tag = 0x010F
                for key in extra_pnginfo:
                    exif[tag] = f"{key}:{json.dumps(extra_pnginfo[key])}"
                    tag -= 1
        per_file = num_frames or len(frames)
        results = []
        counter = next_counter(folder, filename)
        for start in range(0, len(frames), per_file):
            handle, name, counter = reserve(folder, filename, counter, "webp")
            with handle:
                frames[start].save(handle, format="WEBP", save_all=True, duration=int(1000.0 / fps),
                                   append_images=frames[start + 1:start + per_file], exif=exif, lossless=lossless,
                                   quality=quality, method=WEBP_METHODS.get(method))
            results.append({"filename": name, "subfolder": subfolder, "type": "output"})
            counter += 1
        return {"ui": {"images": results, "animated": (per_file != 1,)}}


class SaveAnimatedPNG:
    CATEGORY = "image/animation"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "images": ("IMAGE",),
            "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
            "compress_level": ("INT", {"default": 4, "min": 0, "max": 9}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images: Any, fps: float, compress_level: int, filename_prefix: str = "ComfyUI",
                    prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        from PIL.PngImagePlugin import PngInfo

        folder, filename, subfolder = _start(filename_prefix, images)
        frames = _animated_frames(images)
        metadata = None
        if _metadata_enabled():
            # Private "comf" chunks after the image data, as ComfyUI writes them (tEXt would sit before APNG frames).
            metadata = PngInfo()
            if prompt is not None:
                metadata.add(b"comf", b"prompt\0" + json.dumps(prompt).encode("latin-1", "strict"), after_idat=True)
            if extra_pnginfo is not None:
                for key in extra_pnginfo:
                    payload = key.encode("latin-1", "strict") + b"\0" + json.dumps(extra_pnginfo[key]).encode(
                        "latin-1", "strict")
                    metadata.add(b"comf", payload, after_idat=True)
        handle, name, _ = reserve(folder, filename, next_counter(folder, filename), "png")
        with handle:
            frames[0].save(handle, format="PNG", pnginfo=metadata, compress_level=compress_level, save_all=True,
                           duration=int(1000.0 / fps), append_images=frames[1:])
        return {"ui": {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                       "animated": (True,)}}


def svg_documents(svg: Any) -> list[bytes]:
    """The documents of an SVG value: an object with ``data`` (file-likes or bytes), or bytes/str (lists of them)."""
    items = getattr(svg, "data", svg)
    if not isinstance(items, (list, tuple)):
        items = [items]
    out = []
    for item in items:
        if hasattr(item, "seek"):
            item.seek(0)
            item = item.read()
        out.append(item.encode("utf-8") if isinstance(item, str) else bytes(item))
    return out


class SaveSVGNode:
    DESCRIPTION = "Saves SVG documents in the output directory, with the workflow in a <metadata> element."
    CATEGORY = "image/save"
    RETURN_TYPES = ()
    FUNCTION = "save_svg"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "svg": ("SVG",),
            "filename_prefix": ("STRING", {"default": "svg/ComfyUI", "tooltip": (
                "File name prefix; may contain a subfolder and %width%, %height%, %year% ... tokens.")}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_svg(self, svg: Any, filename_prefix: str = "svg/ComfyUI", prompt: Any = None,
                 extra_pnginfo: Any = None) -> dict[str, Any]:
        folder, filename, subfolder = split_prefix(filename_prefix, context.output_dir(), 0, 0)
        metadata: dict[str, Any] = {}
        if _metadata_enabled():
            if prompt is not None:
                metadata["prompt"] = prompt
            if extra_pnginfo is not None:
                metadata.update(extra_pnginfo)
        block = None
        if metadata:
            block = ("  <metadata>\n                <![CDATA[\n            " + json.dumps(metadata, indent=2)
                     + "\n                ]]>\n            </metadata>\n            ")
        results, counters = [], {}
        for index, document in enumerate(svg_documents(svg)):
            name = filename.replace("%batch_num%", str(index))
            text = document.decode("utf-8")
            if block is not None:
                text = re.sub(r"(<svg[^>]*>)", lambda m: m.group(1) + "\n" + block, text, flags=re.UNICODE)
            handle, file, counter = reserve(folder, name, counters.get(name) or next_counter(folder, name), "svg")
            with handle:
                handle.write(text.encode("utf-8"))
            counters[name] = counter + 1
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
        return {"ui": {"images": results}}


# --- SaveImageAdvanced encoders ---------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: Any, texts: list[tuple[str, str]] = ()) -> bytes:
    """PNG of a uint8 or uint16 array [H, W, C] (C = 1, 3 or 4), tEXt chunks right after IHDR."""
    import numpy as np

    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2" if depth == 16 else "u1").reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter byte 0 per row
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))]
    for key, text in texts:
        out.append(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1", errors="replace")))
    out += [_chunk(b"IDAT", zlib.compress(raw, 6)), _chunk(b"IEND", b"")]
    return b"".join(out)


# CIE xy of the red, green, blue primaries and the D65 white point.
CHROMATICITIES = {"Rec.709": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
                  "Rec.2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290)}


def _exr_attr(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def encode_exr(pixels: Any, attributes: list[tuple[str, str]] = (), primaries: str | None = None) -> bytes:
    """Uncompressed scanline OpenEXR of a float32 array [H, W, C] (Y, RGB or RGBA), with string attributes."""
    import numpy as np

    height, width, channels = pixels.shape
    names = {1: ["Y"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[channels]
    order = sorted(range(channels), key=lambda i: names[i])  # EXR stores channels alphabetically
    chlist = b"".join(names[i].encode() + b"\0" + struct.pack("<iB3xii", 2, 0, 1, 1) for i in order) + b"\0"
    window = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    header = [_exr_attr("channels", "chlist", chlist), _exr_attr("compression", "compression", b"\0"),
              _exr_attr("dataWindow", "box2i", window), _exr_attr("displayWindow", "box2i", window),
              _exr_attr("lineOrder", "lineOrder", b"\0"), _exr_attr("pixelAspectRatio", "float", struct.pack("<f", 1)),
              _exr_attr("screenWindowCenter", "v2f", struct.pack("<ff", 0, 0)),
              _exr_attr("screenWindowWidth", "float", struct.pack("<f", 1))]
    header += [_exr_attr(key, "string", value.encode("utf-8")) for key, value in attributes]
    if primaries is not None:
        header.append(_exr_attr("chromaticities", "chromaticities", struct.pack("<8f", *CHROMATICITIES[primaries])))
    head = b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + b"".join(header) + b"\0"
    planar = np.ascontiguousarray(pixels.astype("<f4")[:, :, order].transpose(0, 2, 1))  # [H, C, W]
    line_bytes = channels * width * 4
    first = len(head) + 8 * height
    offsets = struct.pack(f"<{height}Q", *(first + y * (8 + line_bytes) for y in range(height)))
    lines = b"".join(struct.pack("<ii", y, line_bytes) + planar[y].tobytes() for y in range(height))
    return head + offsets + lines


def srgb_to_linear(t: Any) -> Any:
    """Inverse sRGB transfer on the colour channels (alpha, a 4th channel, passes through)."""
    import torch

    if t.shape[-1] == 4:
        return torch.cat([srgb_to_linear(t[..., :3]), t[..., 3:]], dim=-1)
    return torch.where(t <= 0.04045, t / 12.92, ((t.clamp(min=0.0) + 0.055) / 1.055) ** 2.4)


def hlg_to_linear(t: Any) -> Any:
    """Inverse HLG OETF (BT.2100) to scene-linear light on the colour channels."""
    import torch

    if t.shape[-1] == 4:
        return torch.cat([hlg_to_linear(t[..., :3]), t[..., 3:]], dim=-1)
    a, b, c = 0.17883277, 0.28466892, 0.55991072928
    return torch.where(t <= 0.5, (t ** 2) / 3.0, (torch.exp((t.clamp(min=0.5) - c) / a) + b) / 12.0)


def _texts(prompt: Any, extra_pnginfo: Any) -> list[tuple[str, str]]:
    out = []
    if prompt is not None:
        out.append(("prompt", json.dumps(prompt)))
    for key, value in (extra_pnginfo or {}).items():
        out.append((key, json.dumps(value)))
    return out


def encode_still(image: Any, file_format: str, bit_depth: str, colorspace: str, texts: list[tuple[str, str]]) -> bytes:
    import numpy as np
    import torch

    if image.ndim == 2:
        image = image.unsqueeze(-1)
    if image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"No {file_format}/{bit_depth} encoder for {image.shape[-1]}-channel images: "
                         "supported channel counts are 1 (grayscale), 3 (RGB) and 4 (RGBA).")
    if file_format == "exr":
        if colorspace == "sRGB":
            image = srgb_to_linear(image)
        elif colorspace == "HDR":
            image = hlg_to_linear(image)
        primaries = "Rec.2020" if colorspace == "HDR" else "Rec.709"
        return encode_exr(image.cpu().numpy().astype(np.float32), texts, primaries)
    scale, dtype = (65535.0, np.uint16) if bit_depth == "16-bit" else (255.0, np.uint8)
    pixels = (image * scale).clamp(0, scale).to(torch.int32).cpu().numpy().astype(dtype)
    return encode_png(pixels, texts)


def _avif_exif(prompt: Any, extra_pnginfo: Any) -> Any:
    from PIL import Image

    exif = Image.Exif()
    if prompt is not None:
        exif[0x0110] = f"prompt:{json.dumps(prompt)}"
    tag = 0x010F
    for key, value in (extra_pnginfo or {}).items():
        exif[tag] = f"{key}:{json.dumps(value)}"
        tag -= 1
    return exif


def save_avif(handle: Any, images: Any, bit_depth: str, colorspace: str, crf: int, fps: float,
              exif: Any) -> None:
    """AVIF (still or animated) through Pillow's libavif: 8-bit 4:2:0 sRGB.

    Pillow's encoder takes a quality, not SVT-AV1's CRF: CRF 1..63 maps
    linearly onto quality 100..0. 10-bit and HDR output need an encoder with
    high bit depth support and are refused with a clear error.
    """
    from PIL import Image, features

    if not features.check("avif"):
        raise RuntimeError("AVIF saving needs Pillow built with libavif")
    if colorspace != "sRGB" or bit_depth == "10-bit YUV420":
        raise ValueError("AVIF here is 8-bit sRGB only; choose input_color_space sRGB and bit_depth auto or 8-bit")
    frames = []
    for image in images:
        if image.ndim == 3 and image.shape[-1] not in (1, 3):
            raise ValueError("AVIF saving supports 1-channel grayscale and 3-channel RGB images")
        array = to_uint8(image)
        frames.append(Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array))
    quality = round(100 * (63 - crf) / 62)
    options = {"quality": quality, "subsampling": "4:2:0"}
    if exif is not None:
        options["exif"] = exif
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=round(1000.0 / fps))
    frames[0].save(handle, format="AVIF", **options)


def _png_options() -> list[Any]:
    return [io.Combo.Input("bit_depth", options=["8-bit", "16-bit"], default="8-bit", advanced=True),
            io.Combo.Input("input_color_space", options=["sRGB"], default="sRGB", advanced=True)]


class SaveImageAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveImageAdvanced",
            display_name="Save Image (Advanced)",
            description="Saves images as PNG (8 or 16 bit), linear float EXR or AVIF in the output directory.",
            category="image",
            search_aliases=["save", "save image", "export image", "output image", "write image"],
            inputs=[
                io.Image.Input("images", tooltip="The images to save."),
                io.String.Input("filename_prefix", default="ComfyUI",
                                tooltip="File name prefix; may contain a subfolder and tokens such as %year%."),
                io.DynamicCombo.Input("format", tooltip="The file format.", options=[
                    io.DynamicCombo.Option("png", _png_options()),
                    io.DynamicCombo.Option("exr", [
                        io.Combo.Input("bit_depth", options=["32-bit float"], default="32-bit float", advanced=True),
                        io.Combo.Input("input_color_space", options=["sRGB", "HDR", "linear"], default="sRGB",
                                       advanced=True, tooltip="How the input is encoded; EXR stores linear light."),
                    ]),
                    io.DynamicCombo.Option("avif", [
                        io.Combo.Input("bit_depth", options=["auto", "8-bit YUV420", "10-bit YUV420"], default="auto",
                                       advanced=True),
                        io.Combo.Input("input_color_space", options=["sRGB", "HDR", "HDR PQ"], default="sRGB",
                                       advanced=True),
                        io.Int.Input("crf", default=18, min=1, max=63, advanced=True,
                                     tooltip="Lower is better quality and larger files."),
                        io.DynamicCombo.Input("save_mode", display_name="save mode", options=[
                            io.DynamicCombo.Option("still images", []),
                            io.DynamicCombo.Option("animated", [
                                io.Float.Input("fps", default=6.0, min=0.01, max=1000.0, step=0.01),
                                io.Int.Input("loop_count", default=0, min=0, max=1000, advanced=True,
                                             tooltip="How often the animation repeats; 0 loops forever."),
                            ]),
                        ]),
                    ]),
                ]),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, images: Any, filename_prefix: str, format: dict[str, Any]) -> io.NodeOutput:  # noqa: A002
        file_format = format["format"]
        bit_depth = format.get("bit_depth", "8-bit")
        colorspace = format.get("input_color_space", "sRGB")
        folder, filename, subfolder = _start(filename_prefix, images)
        prompt, extra = cls.hidden.prompt, cls.hidden.extra_pnginfo
        texts = _texts(prompt, extra) if _metadata_enabled() else []
        results = []
        counter = next_counter(folder, filename)
        if file_format == "avif":
            save_mode = format.get("save_mode") or {"save_mode": "still images"}
            animated = save_mode.get("save_mode") == "animated"
            exif = _avif_exif(prompt, extra) if texts else None
            groups = [images] if animated else [images[i:i + 1] for i in range(len(images))]
            for index, group in enumerate(groups):
                name = filename.replace("%batch_num%", str(index))
                handle, file, counter = reserve(folder, name, counter, "avif", tail="")
                with handle:
                    save_avif(handle, group, bit_depth, colorspace, format.get("crf", 18),
                              save_mode.get("fps", 1.0), exif)
                results.append({"filename": file, "subfolder": subfolder, "type": "output"})
                counter += 1
            ui: dict[str, Any] = {"images": results}
            if animated and len(images) > 1:
                ui["animated"] = (True,)
            return io.NodeOutput(images, ui=ui)

        for index, image in enumerate(images):
            data = encode_still(image, file_format, bit_depth, colorspace, texts)
            name = filename.replace("%batch_num%", str(index))
            handle, file, counter = reserve(folder, name, counter, file_format, tail="")
            with handle:
                handle.write(data)
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
            counter += 1
        return io.NodeOutput(images, ui={"images": results})


class ImageCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageCompare",
            display_name="Image Compare",
            description="Shows two images on top of each other with a slider to compare them.",
            category="image",
            is_experimental=True,
            is_output_node=True,
            inputs=[
                io.Image.Input("image_a", optional=True),
                io.Image.Input("image_b", optional=True),
                io.ImageCompare.Input("compare_view"),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, image_a: Any = None, image_b: Any = None, compare_view: Any = None) -> io.NodeOutput:
        from .save import PreviewImage

        result: dict[str, Any] = {"a_images": [], "b_images": []}
        for key, images, prefix in (("a_images", image_a, "comfy.compare.a"), ("b_images", image_b, "comfy.compare.b")):
            if images is not None and len(images) > 0:
                result[key] = PreviewImage().save_images(images, prefix)["ui"]["images"]
        return io.NodeOutput(ui=result)


NODES = [
    NodeDef("SaveAnimatedWEBP", SaveAnimatedWEBP, "SaveAnimatedWEBP", "comfy_extras.nodes_images"),
    NodeDef("SaveAnimatedPNG", SaveAnimatedPNG, "SaveAnimatedPNG", "comfy_extras.nodes_images"),
    NodeDef("SaveSVGNode", SaveSVGNode, "SaveSVGNode", "comfy_extras.nodes_images"),
    NodeDef("SaveImageAdvanced", SaveImageAdvanced, None, "comfy_extras.nodes_images"),
    NodeDef("ImageCompare", ImageCompare, None, "comfy_extras.nodes_image_compare"),
]
