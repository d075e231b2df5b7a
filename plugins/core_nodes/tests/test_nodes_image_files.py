"""IMAGE nodes that read or write files, through the server: animated WEBP/PNG, SVG, SaveImageAdvanced,
MaskPreview, ImageCompare, LoadImageOutput, WebcamCapture and Painter."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

PROMPT_EXTRA = {"extra_data": {"extra_pnginfo": {"workflow": {"nodes": [], "version": 0.4}}}}


def _image_inputs(server, name: str, array: np.ndarray) -> list:
    folder = server.input_dir / "probes"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", array.astype(np.float32))
    return [f"load_{name}", 0]


def _frames(rng: np.random.Generator, count: int = 3, h: int = 10, w: int = 14) -> np.ndarray:
    return (rng.integers(0, 256, (count, h, w, 3)) / 255.0).astype(np.float32)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def _png16(data: bytes) -> np.ndarray:
    """Pixels of an unfiltered 16-bit RGB PNG (what SaveImageAdvanced writes)."""
    chunks = _png_chunks(data)
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, color) == (16, 2)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * 6)
    assert not rows[:, 0].any()
    return rows[:, 1:].copy().view(">u2").reshape(height, width, 3).astype(np.uint16)


def _exr(data: bytes) -> tuple[dict[str, tuple[str, bytes]], np.ndarray]:
    """Header attributes and [H, W, C] float pixels (channels in stored, alphabetical order) of an EXR."""
    assert data[:4] == b"\x76\x2f\x31\x01"
    pos, attrs = 8, {}
    while data[pos] != 0:
        name_end = data.index(b"\0", pos)
        type_end = data.index(b"\0", name_end + 1)
        size = struct.unpack("<i", data[type_end + 1:type_end + 5])[0]
        attrs[data[pos:name_end].decode()] = (data[name_end + 1:type_end].decode(),
                                              data[type_end + 5:type_end + 5 + size])
        pos = type_end + 5 + size
    x0, y0, x1, y1 = struct.unpack("<iiii", attrs["dataWindow"][1])
    width, height = x1 - x0 + 1, y1 - y0 + 1
    chlist, channels = attrs["channels"][1], 0
    while chlist[0] != 0:  # name, then pixel type, linear flag, reserved, x/y sampling (16 bytes)
        chlist = chlist[chlist.index(b"\0") + 17:]
        channels += 1
    offsets = struct.unpack(f"<{height}Q", data[pos + 1:pos + 1 + 8 * height])
    lines = []
    for y, offset in enumerate(offsets):
        line_y, size = struct.unpack("<ii", data[offset:offset + 8])
        assert line_y == y and size == channels * width * 4
        lines.append(np.frombuffer(data[offset + 8:offset + 8 + size], "<f4").reshape(channels, width))
    return attrs, np.stack(lines).transpose(0, 2, 1)


def test_animated_webp_and_png(graph_server):
    rng = np.random.default_rng(1)
    frames = _frames(rng)
    prompt = {
        "load_anim": {"class_type": "TestLoad", "inputs": {"name": "anim.npy"}},
        "webp": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": _image_inputs(graph_server, "anim", frames), "filename_prefix": "anim/webp", "fps": 4.0,
            "lossless": True, "quality": 80, "method": "fastest"}},
        "apng": {"class_type": "SaveAnimatedPNG", "inputs": {
            "images": ["load_anim", 0], "filename_prefix": "anim/apng", "fps": 5.0, "compress_level": 1}},
    }
    outputs = graph_server.wait(graph_server.queue(prompt, **PROMPT_EXTRA))["outputs"]
    assert outputs["webp"]["images"] == [{"filename": "webp_00001_.webp", "subfolder": "anim", "type": "output"}]
    assert outputs["webp"]["animated"] == [True]
    assert outputs["apng"]["images"] == [{"filename": "apng_00001_.png", "subfolder": "anim", "type": "output"}]
    assert outputs["apng"]["animated"] == [True]
    expected = np.clip(255.0 * frames, 0, 255).astype(np.uint8)

    webp = Image.open(graph_server.output_dir / "anim" / "webp_00001_.webp")
    assert webp.n_frames == 3
    for i in range(3):
        webp.seek(i)
        webp.load()
        assert webp.info["duration"] == 250
        assert np.array_equal(np.asarray(webp.convert("RGB")), expected[i])
    exif = webp.getexif()
    assert json.loads(exif[0x0110].split(":", 1)[1])["webp"]["class_type"] == "SaveAnimatedWEBP"
    assert exif[0x010F].startswith("workflow:")

    path = graph_server.output_dir / "anim" / "apng_00001_.png"
    apng = Image.open(path)
    assert apng.n_frames == 3
    for i in range(3):
        apng.seek(i)
        assert np.array_equal(np.asarray(apng.convert("RGB")), expected[i])
    comf = [body for kind, body in _png_chunks(path.read_bytes()) if kind == b"comf"]
    assert [body.split(b"\0", 1)[0] for body in comf] == [b"prompt", b"workflow"]
    assert json.loads(comf[0].split(b"\0", 1)[1])["apng"]["class_type"] == "SaveAnimatedPNG"


def test_save_svg_with_metadata(graph_server):
    folder = graph_server.input_dir / "probes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shape.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect/></svg>')
    prompt = {
        "svg": {"class_type": "TestLoad", "inputs": {"name": "shape.svg"}},
        "save": {"class_type": "SaveSVGNode", "inputs": {"svg": ["svg", 0], "filename_prefix": "svg/ComfyUI"}},
    }
    for counter in (1, 2):  # a changed prefix re-runs the node; the counter continues in the same folder
        prompt["save"]["inputs"]["filename_prefix"] = "svg/ComfyUI" if counter == 1 else "svg/../svg/ComfyUI"
        outputs = graph_server.wait(graph_server.queue(prompt, **PROMPT_EXTRA))["outputs"]
        name = f"ComfyUI_{counter:05}_.svg"
        assert outputs["save"]["images"] == [{"filename": name, "subfolder": "svg", "type": "output"}]
        text = (graph_server.output_dir / "svg" / name).read_text()
        assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">\n  <metadata>')
        metadata = json.loads(text.split("<![CDATA[", 1)[1].split("]]>", 1)[0])
        assert metadata["prompt"]["save"]["class_type"] == "SaveSVGNode" and "workflow" in metadata
        assert text.endswith("<rect/></svg>")


def test_save_image_advanced_png16_exr_avif(graph_server):
    rng = np.random.default_rng(2)
    frames = (rng.random((2, 6, 9, 3))).astype(np.float32)
    images = _image_inputs(graph_server, "adv", frames)
    prompt = {
        "load_adv": {"class_type": "TestLoad", "inputs": {"name": "adv.npy"}},
        "png": {"class_type": "SaveImageAdvanced", "inputs": {
            "images": images, "filename_prefix": "adv/png", "format": "png", "format.bit_depth": "16-bit",
            "format.input_color_space": "sRGB"}},
        "png8": {"class_type": "SaveImageAdvanced", "inputs": {
            "images": images, "filename_prefix": "adv/png8", "format": "png", "format.bit_depth": "8-bit",
            "format.input_color_space": "sRGB"}},
        "exr": {"class_type": "SaveImageAdvanced", "inputs": {
            "images": images, "filename_prefix": "adv/exr", "format": "exr", "format.bit_depth": "32-bit float",
            "format.input_color_space": "linear"}},
        "avif": {"class_type": "SaveImageAdvanced", "inputs": {
            "images": images, "filename_prefix": "adv/avif", "format": "avif", "format.bit_depth": "auto",
            "format.input_color_space": "sRGB", "format.crf": 1, "format.save_mode": "animated",
            "format.save_mode.fps": 4.0, "format.save_mode.loop_count": 0}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["png", 0], "name": "passthrough"}},
    }
    prompt_id = graph_server.queue(prompt, **PROMPT_EXTRA)
    entry = graph_server.wait(prompt_id)
    outputs = entry["outputs"]
    assert [i["filename"] for i in outputs["png"]["images"]] == ["png_00001.png", "png_00002.png"]
    assert [i["filename"] for i in outputs["exr"]["images"]] == ["exr_00001.exr", "exr_00002.exr"]
    assert outputs["avif"]["images"] == [{"filename": "avif_00001.avif", "subfolder": "adv", "type": "output"}]
    assert outputs["avif"]["animated"] == [True]
    folder = graph_server.output_dir / "adv"

    data = (folder / "png_00002.png").read_bytes()
    assert np.array_equal(_png16(data), (frames[1] * 65535.0).clip(0, 65535).astype(np.int32).astype(np.uint16))
    texts = dict(body.split(b"\0", 1) for kind, body in _png_chunks(data) if kind == b"tEXt")
    assert json.loads(texts[b"prompt"])["png"]["class_type"] == "SaveImageAdvanced"
    assert _png_chunks(data)[1][0] == b"tEXt"  # metadata right after IHDR
    with Image.open(folder / "png_00002.png") as img:  # a standard decoder reads it
        assert img.size == (9, 6)
    with Image.open(folder / "png8_00001.png") as img:
        assert np.array_equal(np.asarray(img), (frames[0] * 255).astype(np.uint8))

    attrs, pixels = _exr((folder / "exr_00001.exr").read_bytes())
    assert np.array_equal(pixels[..., ::-1], frames[0])  # stored B, G, R
    assert attrs["compression"] == ("compression", b"\0")
    assert json.loads(attrs["prompt"][1])["exr"]["class_type"] == "SaveImageAdvanced"
    assert struct.unpack("<8f", attrs["chromaticities"][1])[0] == pytest.approx(0.64)

    with Image.open(folder / "avif_00001.avif") as avif:
        assert avif.n_frames == 2 and avif.size == (9, 6)
        avif.seek(0)
        luma = np.array([0.299, 0.587, 0.114])  # chroma is subsampled 4:2:0, so compare brightness
        assert np.abs(np.asarray(avif.convert("RGB"), dtype=float) @ luma - frames[0] @ luma * 255).mean() < 8
        assert "prompt:" in avif.getexif()[0x0110]
    assert np.array_equal(graph_server.run(prompt)["passthrough"], frames)


def test_save_image_advanced_exr_srgb_is_linearised(tmp_path):
    import torch

    from comfy_kernel_core_nodes.nodes.image_save import encode_still

    image = torch.tensor([[[0.0, 0.04045, 0.5], [1.0, 0.2, 0.8]]])
    _, pixels = _exr(encode_still(image, "exr", "32-bit float", "sRGB", []))
    expected = np.where(image.numpy() <= 0.04045, image.numpy() / 12.92, ((image.numpy() + 0.055) / 1.055) ** 2.4)
    assert np.allclose(pixels[..., ::-1], expected, atol=1e-6)


def test_mask_preview_and_image_compare(graph_server):
    rng = np.random.default_rng(3)
    mask = rng.random((2, 5, 7)).astype(np.float32)
    prompt = {
        "load_m": {"class_type": "TestLoad", "inputs": {"name": "m.npy"}},
        "preview": {"class_type": "MaskPreview", "inputs": {"mask": _image_inputs(graph_server, "m", mask)}},
        "to_image": {"class_type": "MaskToImage", "inputs": {"mask": ["load_m", 0]}},
        "compare": {"class_type": "ImageCompare", "inputs": {"image_a": ["to_image", 0], "compare_view": ""}},
    }
    outputs = graph_server.outputs(prompt)
    images = outputs["preview"]["images"]
    assert len(images) == 2 and all(i["type"] == "temp" for i in images)
    assert images[0]["filename"].startswith("ComfyUI_temp_") and images[0]["filename"].endswith("_00001_.png")
    with Image.open(graph_server.base / "temp" / images[1]["filename"]) as img:
        assert np.array_equal(np.asarray(img)[..., 0], np.clip(255.0 * mask[1], 0, 255).astype(np.uint8))
    compare = outputs["compare"]
    assert compare["b_images"] == [] and len(compare["a_images"]) == 2
    assert compare["a_images"][0]["filename"].startswith("comfy.compare.a_temp_")


def test_load_image_output_and_webcam_capture(graph_server):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    (graph_server.output_dir / "sub").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(graph_server.output_dir / "sub" / "out.png")
    (graph_server.base / "temp" / "webcam").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba[..., :3]).save(graph_server.base / "temp" / "webcam" / "cap.png")
    prompt = {
        "out": {"class_type": "LoadImageOutput", "inputs": {"image": "sub/out.png [output]"}},
        "cam": {"class_type": "WebcamCapture", "inputs": {"image": "webcam/cap.png [temp]", "width": 0,
                                                          "height": 0, "capture_on_queue": True}},
        "p_image": {"class_type": "TestProbe", "inputs": {"value": ["out", 0], "name": "image"}},
        "p_mask": {"class_type": "TestProbe", "inputs": {"value": ["out", 1], "name": "mask"}},
        "p_cam": {"class_type": "TestProbe", "inputs": {"value": ["cam", 0], "name": "cam"}},
    }
    out = graph_server.run(prompt)
    assert out["image"].shape == (1, 4, 5, 3) and np.allclose(out["image"][..., 1], 200 / 255)
    assert out["mask"][0, 0, 0] == 1.0 and out["mask"][0, 1, 1] == 0.0
    assert np.array_equal(out["cam"], out["image"])


@pytest.mark.parametrize("name", ["../secret.png [output]", "missing.png [output]"])
def test_load_image_output_refuses_outside_or_missing(graph_server, name):
    (graph_server.base / "secret.png").write_bytes(b"x")
    with pytest.raises(AssertionError, match="400|Invalid image file"):
        graph_server.run({"out": {"class_type": "LoadImageOutput", "inputs": {"image": name}},
                          "p": {"class_type": "TestProbe", "inputs": {"value": ["out", 0], "name": "x"}}})


def test_painter_over_background_and_image(graph_server):
    paint = np.zeros((64, 64, 4), np.uint8)
    paint[2:6, 2:6] = (255, 0, 0, 255)
    paint[0, 0] = (0, 0, 255, 128)
    Image.fromarray(paint, "RGBA").save(graph_server.input_dir / "painter-1.png")
    base = np.full((1, 4, 4, 3), 0.5, np.float32)
    prompt = {
        "blank": {"class_type": "Painter", "inputs": {"mask": "painter-1.png [input]", "width": 64, "height": 64,
                                                      "bg_color": "#00ff00"}},
        "load_base": {"class_type": "TestLoad", "inputs": {"name": "base.npy"}},
        "over": {"class_type": "Painter", "inputs": {"image": _image_inputs(graph_server, "base", base),
                                                     "mask": "painter-1.png [input]", "width": 64, "height": 64,
                                                     "bg_color": "#000000"}},
        "empty": {"class_type": "Painter", "inputs": {"mask": "", "width": 64, "height": 128, "bg_color": "#ff0000"}},
        "p1": {"class_type": "TestProbe", "inputs": {"value": ["blank", 0], "name": "blank"}},
        "p2": {"class_type": "TestProbe", "inputs": {"value": ["blank", 1], "name": "blank_mask"}},
        "p3": {"class_type": "TestProbe", "inputs": {"value": ["over", 0], "name": "over"}},
        "p4": {"class_type": "TestProbe", "inputs": {"value": ["empty", 0], "name": "empty"}},
        "p5": {"class_type": "TestProbe", "inputs": {"value": ["empty", 1], "name": "empty_mask"}},
    }
    out = graph_server.run(prompt)
    assert out["blank"].shape == (1, 64, 64, 3)
    assert out["blank"][0, 3, 3].tolist() == [1.0, 0.0, 0.0] and out["blank"][0, 7, 7].tolist() == [0.0, 1.0, 0.0]
    a = 128 / 255
    assert out["blank"][0, 0, 0] == pytest.approx([0.0, 1 - a, a], abs=1e-6)
    assert out["blank_mask"][0, 3, 3] == 1.0 and out["blank_mask"][0, 7, 7] == 0.0
    assert out["over"].shape == (1, 4, 4, 3)  # the painting is resized to the image
    assert out["empty"].shape == (1, 128, 64, 3) and out["empty"][0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert not out["empty_mask"].any()
