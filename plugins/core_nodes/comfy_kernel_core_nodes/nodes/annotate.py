"""Bounding boxes on images (newer than ComfyUI 0.3.64): draw detections, and the box-drawing canvas node.

A BOUNDING_BOX value is ``{"x", "y", "width", "height"}`` in pixels, a list
of them, or a list of such lists (one per image); detection nodes add
``label`` and ``score``, the canvas adds ``metadata``.
"""

from __future__ import annotations

import json
from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

BOUNDING_BOXES = io.Custom("BOUNDING_BOXES")

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
BOX_COLORS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 165, 0), (128, 0, 128), (0, 255, 255), (255, 20, 147),
              (100, 149, 237)]


def _font(size: int | None = None) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size) if size else ImageFont.truetype("arial.ttf", 16)
    except Exception:
        return ImageFont.load_default()


def per_image_boxes(bboxes: Any, count: int) -> list[list[dict[str, Any]]]:
    """Boxes as one list per image: a dict or a flat list applies to every image."""
    if isinstance(bboxes, dict):
        return [[bboxes]] * count
    if not isinstance(bboxes, list) or not bboxes:
        return [[]] * count
    if not isinstance(bboxes[0], list):
        return [bboxes] * count
    return bboxes


def draw_detections(img: Any, detections: list[dict[str, Any]]) -> Any:
    """Outlines (width 3) and ``label score`` captions, lowest score first so the best box ends on top."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    font = _font()
    ranked = sorted(detections, key=lambda d: float(d.get("score", 1.0)))
    for det in ranked:
        x1, y1 = float(det["x"]), float(det["y"])
        x2, y2 = x1 + float(det["width"]), y1 + float(det["height"])
        label = det.get("label") if det.get("label") in COCO_CLASSES else None
        color = BOX_COLORS[(COCO_CLASSES.index(label) if label else 0) % len(BOX_COLORS)]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=3)
        if label is not None:
            draw.text((x1 + 2, y1 + 2), f"{label} {float(det.get('score', 1.0)):.2f}", fill=color, font=font)
    return img


class DrawBBoxes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrawBBoxes",
            display_name="Draw BBoxes",
            category="detection/",
            search_aliases=["bbox", "bounding box", "object detection", "rf_detr", "visualize detections", "coco"],
            inputs=[
                io.Image.Input("image", optional=True),
                io.BoundingBox.Input("bboxes", force_input=True),
            ],
            outputs=[io.Image.Output("out_image", display_name="out_image")],
        )

    @classmethod
    def execute(cls, bboxes: Any, image: Any = None) -> io.NodeOutput:
        import numpy as np
        import torch
        from PIL import Image

        count = image.shape[0] if image is not None else 1
        frames = per_image_boxes(bboxes, count)
        if image is None:
            count = len(frames)
            width = max((int(d["x"] + d["width"]) for frame in frames for d in frame), default=640)
            height = max((int(d["y"] + d["height"]) for frame in frames for d in frame), default=640)
            image = torch.zeros((count, height, width, 3), dtype=torch.float32)
        out = []
        for i in range(count):
            pixels = (image[i].cpu() * 255).to(torch.uint8).numpy()
            img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            if frames[i]:
                img = draw_detections(img, frames[i])
            out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).reshape(pixels.shape))
        return io.NodeOutput(torch.stack(out))


# --- the bounding-box canvas ----------------------------------------------------------------------


def _to_fractions(box: dict[str, Any], width: int, height: int) -> dict[str, float]:
    w, h = width or 1, height or 1
    return {"x": box.get("x", 0) / w, "y": box.get("y", 0) / h, "w": box.get("width", 0) / w,
            "h": box.get("height", 0) / h}


def _to_pixels(region: dict[str, Any], width: int, height: int) -> dict[str, int]:
    x, y, w, h = region.get("x", 0.0), region.get("y", 0.0), region.get("w", 0.0), region.get("h", 0.0)
    if w < 0:
        x, w = x + w, -w
    if h < 0:
        y, h = y + h, -h
    return {"x": round(x * width), "y": round(y * height), "width": round(w * width), "height": round(h * height)}


def _clean_boxes(bboxes: Any) -> list[dict[str, Any]]:
    """The first frame of a BOUNDING_BOX value, each box reduced to x/y/width/height (+ metadata)."""
    if isinstance(bboxes, dict):
        frame = [bboxes]
    elif not isinstance(bboxes, list) or not bboxes:
        frame = []
    elif isinstance(bboxes[0], dict):
        frame = bboxes
    else:
        frame = bboxes[0] if isinstance(bboxes[0], list) else []
    out = []
    for box in frame:
        if not isinstance(box, dict):
            continue
        clean = {k: box.get(k, 0) for k in ("x", "y", "width", "height")}
        if isinstance(box.get("metadata"), dict):
            clean["metadata"] = box["metadata"]
        out.append(clean)
    return out


def _elements_to_boxes(elements: list[Any], width: int, height: int) -> list[dict[str, Any]]:
    """Prompt elements (``bbox`` as [ymin, xmin, ymax, xmax] on a 0..1000 grid) as pixel boxes with metadata."""
    boxes = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        bbox = element.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
            raise ValueError("bboxes element is missing a valid 'bbox' [ymin, xmin, ymax, xmax]")
        try:
            ymin, xmin, ymax, xmax = (float(v) / 1000.0 for v in bbox)
        except (TypeError, ValueError):
            raise ValueError("bboxes element 'bbox' must contain four numbers") from None
        kind = "text" if element.get("type") == "text" else "obj"
        boxes.append({
            "x": round(min(xmin, xmax) * width), "y": round(min(ymin, ymax) * height),
            "width": round(abs(xmax - xmin) * width), "height": round(abs(ymax - ymin) * height),
            "metadata": {"type": kind, "text": element.get("text", "") if kind == "text" else "",
                         "desc": element.get("desc", ""), "palette": element.get("color_palette", []) or []},
        })
    return boxes


def boxes_from_input(data: Any, width: int, height: int) -> list[dict[str, Any]]:
    """Boxes from the optional ``bboxes`` input: BOUNDING_BOX values, prompt elements, or JSON text of either."""
    if data is None:
        return []
    if isinstance(data, str):
        if not data.strip():
            return []
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"bboxes string input is not valid JSON: {exc}") from exc
    def is_box(d):
        return (all(k in d for k in ("x", "y", "width", "height")))
    def is_element(d):
        return (isinstance(d.get("bbox"), (list, tuple)) and len(d["bbox"]) == 4)
    if isinstance(data, dict):
        if is_element(data):
            return _elements_to_boxes([data], width, height)
        if is_box(data):
            return _clean_boxes(data)
        raise ValueError("bboxes dict must be a bounding box (x, y, width, height) or an element (with a 'bbox')")
    if not isinstance(data, list):
        raise ValueError(f"bboxes input must be bounding boxes, elements, or a JSON string, got {type(data).__name__}")
    if not data:
        return []
    first = data[0]
    if isinstance(first, list):
        return _clean_boxes(data)
    if isinstance(first, dict):
        if is_element(first):
            return _elements_to_boxes(data, width, height)
        if is_box(first):
            return _clean_boxes(data)
        raise ValueError("bboxes items must be bounding boxes (x, y, width, height) or elements (with a 'bbox')")
    raise ValueError(f"bboxes list must contain bounding boxes or elements, got {type(first).__name__}")


def _regions(boxes: Any, width: int, height: int) -> list[dict[str, Any]]:
    regions = []
    for box in boxes if isinstance(boxes, list) else []:
        if not isinstance(box, dict):
            continue
        meta = box.get("metadata") if isinstance(box.get("metadata"), dict) else {}
        regions.append({**_to_fractions(box, width, height), "type": meta.get("type", "obj"),
                        "text": meta.get("text", ""), "desc": meta.get("desc", ""),
                        "palette": meta.get("palette", [])})
    return regions


def _hex(color: str) -> tuple[int, int, int] | None:
    digits = str(color).strip().lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    if len(digits) < 6:
        return None
    try:
        return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        return None


def _palette(colors: Any) -> list[str]:
    out = []
    for color in colors if isinstance(colors, list) else []:
        rgb = _hex(color) if isinstance(color, str) else None
        if rgb is not None:
            out.append("#{:02X}{:02X}{:02X}".format(*rgb))
    return out


def elements(regions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompt elements of the regions: ``bbox`` [ymin, xmin, ymax, xmax] on a 0..1000 grid, text, description, palette."""
    def grid(value: float) -> int:
        return max(0, min(1000, round(value * 1000)))

    out = []
    for region in regions:
        kind = "text" if region.get("type") == "text" else "obj"
        x, y, w, h = region.get("x", 0.0), region.get("y", 0.0), region.get("w", 0.0), region.get("h", 0.0)
        ymin, xmin, ymax, xmax = grid(y), grid(x), grid(y + h), grid(x + w)
        element: dict[str, Any] = {"type": kind, "bbox": [min(ymin, ymax), min(xmin, xmax), max(ymin, ymax),
                                                          max(xmin, xmax)]}
        if kind == "text":
            element["text"] = region.get("text", "")
        element["desc"] = region.get("desc", "")
        palette = _palette(region.get("palette", []))
        if palette:
            element["color_palette"] = palette[:5]
        out.append(element)
    return out


def render_preview(regions: list[dict[str, Any]], width: int, height: int, background: Any = None) -> Any:
    """A preview (long edge at most 1024) of the regions: outlines, numbered tags and their descriptions."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageEnhance

    if background is not None:
        pixels = (background[0].detach().cpu().numpy()[..., :3] * 255).clip(0, 255).astype(np.uint8)
        bg = Image.fromarray(pixels)
        scale = min(1.0, 1024 / (max(bg.size) or 1))
        size = (max(1, round(bg.size[0] * scale)), max(1, round(bg.size[1] * scale)))
        base = ImageEnhance.Brightness(bg.resize(size, Image.LANCZOS)).enhance(0.25).convert("RGBA")
    else:
        scale = min(1.0, 1024 / (max(width, height) or 1))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        base = Image.new("RGBA", size, (32, 32, 32, 255))
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font_size = max(10, round(size[1] / 64))
    font, tag_font = _font(font_size), _font(max(9, font_size - 2))
    for i, region in enumerate(regions):
        palette = _palette(region.get("palette"))
        r, g, b = _hex(palette[0]) if palette else (140, 140, 140)
        xs = sorted(max(0, min(size[0], round(v * size[0]))) for v in (region["x"], region["x"] + region["w"]))
        ys = sorted(max(0, min(size[1], round(v * size[1]))) for v in (region["y"], region["y"] + region["h"]))
        draw.rectangle([xs[0], ys[0], xs[1], ys[1]], outline=(r, g, b, 255), width=2)
        tag = str(i + 1).zfill(2)
        draw.rectangle([xs[0], ys[0], xs[0] + draw.textlength(tag, font=tag_font) + 6, ys[0] + font_size + 2],
                       fill=(r, g, b, 255))
        dark_text = 0.299 * r + 0.587 * g + 0.114 * b > 140
        draw.text((xs[0] + 3, ys[0] + 1), tag, fill=(0, 0, 0, 255) if dark_text else (255, 255, 255, 255),
                  font=tag_font)
        body = region.get("desc", "") or ""
        if region.get("type") == "text" and region.get("text"):
            body = '"{}"{}'.format(region["text"], " — " + body if body else "")
        if body and xs[1] - xs[0] > 8:
            draw.text((xs[0] + 4, ys[0] + font_size + 5), body, fill=(r, g, b, 255), font=font)
    composed = Image.alpha_composite(base, overlay).convert("RGB")
    return torch.from_numpy(np.asarray(composed, dtype=np.float32) / 255.0).unsqueeze(0)


class CreateBoundingBoxes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CreateBoundingBoxes",
            display_name="Create Bounding Boxes",
            category="utilities",
            description="Draw bounding boxes on a canvas; outputs a preview, pixel boxes and prompt elements.",
            inputs=[
                io.Image.Input("background", optional=True),
                io.Custom("BOUNDING_BOX,ARRAY,STRING").Input("bboxes", optional=True),
                io.Int.Input("width", default=1024, min=64, max=16384, step=16),
                io.Int.Input("height", default=1024, min=64, max=16384, step=16),
                BOUNDING_BOXES.Input("editor_state", socketless=False, default=[]),
                BOUNDING_BOXES.Input("last_incoming", optional=True, socketless=True, default=[]),
            ],
            outputs=[io.Image.Output(display_name="preview"), io.BoundingBox.Output(display_name="bboxes"),
                     io.Custom("ARRAY").Output(display_name="elements")],
            is_output_node=True,
            is_experimental=True,
        )

    @classmethod
    def execute(cls, width: int, height: int, editor_state: Any = None, last_incoming: Any = None,
                background: Any = None, bboxes: Any = None) -> io.NodeOutput:
        incoming = boxes_from_input(bboxes, width, height)
        applied = last_incoming if isinstance(last_incoming, list) else []
        # A new upstream value re-initialises the canvas; otherwise the canvas edits win.
        source = incoming if incoming and incoming != applied else (editor_state or [])
        regions = _regions(source, width, height)
        frame = [_to_pixels(r, width, height) for r in regions]
        ui: dict[str, Any] = {"dims": [width, height]}
        if incoming:
            ui["input_bboxes"] = incoming
        return io.NodeOutput(render_preview(regions, width, height, background), [frame] if frame else [],
                             elements(regions), ui=ui)


NODES = [
    NodeDef("DrawBBoxes", DrawBBoxes, None, "comfy_extras.nodes_rfdetr"),
    NodeDef("CreateBoundingBoxes", CreateBoundingBoxes, None, "comfy_extras.nodes_bounding_boxes"),
]
