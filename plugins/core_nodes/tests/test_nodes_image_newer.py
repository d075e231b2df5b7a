"""Image nodes newer than ComfyUI 0.3.64, through the server, checked against the behaviour their source
describes; where one does what a 0.3.64 node does, against that node's captured ComfyUI output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from comfy_kernel_core_nodes.nodes.color import rgb_to_lab
from comfy_kernel_core_nodes.nodes.image_resize import resize_ops

DATA = Path(__file__).parent / "data" / "image_nodes"


@pytest.fixture(scope="module")
def loaded(graph_server):
    """Writes the parity inputs for TestLoad; returns (inputs, ComfyUI 0.3.64 outputs, link factory)."""
    with np.load(DATA / "inputs.npz") as data:
        inputs = {k: data[k] for k in data.files}
    with np.load(DATA / "outputs.npz") as data:
        outputs = {k: data[k] for k in data.files}
    folder = graph_server.input_dir / "probes"
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in inputs.items():
        np.save(folder / f"{name}.npy", array)
        np.savez(folder / f"{name}.latent.npz", samples=array)

    def load(prompt: dict, name: str, latent: bool = False) -> list:
        node_id = f"load_{name}{'_latent' if latent else ''}"
        prompt[node_id] = {"class_type": "TestLoad",
                           "inputs": {"name": f"{name}.latent.npz" if latent else f"{name}.npy"}}
        return [node_id, 0]

    return inputs, outputs, load


def _probe(prompt: dict, source: list, name: str) -> None:
    prompt[f"probe_{name}"] = {"class_type": "TestProbe", "inputs": {"value": source, "name": name}}


def test_resize_image_mask_node(graph_server, loaded):
    inputs, comfy, load = loaded
    p: dict = {}
    img, img_b, mask = load(p, "img"), load(p, "img_b"), load(p, "mask")
    p["total"] = {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": img_b, "resize_type": "scale total pixels", "resize_type.megapixels": 0.01,
        "scale_method": "bilinear"}}
    p["longer"] = {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": img, "resize_type": "scale longer dimension", "resize_type.longer_size": 24, "scale_method": "area"}}
    p["dims"] = {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": img, "resize_type": "scale dimensions", "resize_type.width": 10, "resize_type.height": 10,
        "resize_type.crop": "center", "scale_method": "bilinear"}}
    p["scale"] = {"class_type": "ImageScale", "inputs": {"image": img, "upscale_method": "bilinear", "width": 10,
                                                         "height": 10, "crop": "center"}}
    p["mask_by"] = {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": mask, "resize_type": "scale by multiplier", "resize_type.multiplier": 0.5,
        "scale_method": "nearest-exact"}}
    p["match"] = {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": mask, "resize_type": "match size", "resize_type.match": img_b, "resize_type.crop": "disabled",
        "scale_method": "area"}}
    p["multiple"] = {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": img_b, "resize_type": "scale to multiple", "resize_type.multiple": 4, "scale_method": "bicubic"}}
    for name in ("total", "longer", "dims", "scale", "mask_by", "match", "multiple"):
        _probe(p, [name, 0], name)
    out = graph_server.run(p)
    assert np.array_equal(out["total"], comfy["total_pixels_bilinear.0"])  # ImageScaleToTotalPixels' maths
    assert np.array_equal(out["longer"], comfy["max_dim_area.0"])  # ImageScaleToMaxDimension's
    assert np.array_equal(out["dims"], out["scale"])  # ImageScale's
    assert np.array_equal(out["mask_by"], inputs["mask"][:, 1::2, 1::2])  # nearest-exact picks pixel centres
    assert out["match"].shape == (2, 9, 10)
    assert out["multiple"].shape == (1, 8, 8, 3)


def test_scale_to_multiple_covers_then_crops():
    assert resize_ops(30, 17, "area", {"resize_type": "scale to multiple", "multiple": 8}) == [
        ("scale", 29, 16, "area", "disabled"), ("crop", 2, 0, 24, 16)]
    assert resize_ops(32, 16, "area", {"resize_type": "scale to multiple", "multiple": 8}) == []
    assert resize_ops(10, 20, "area", {"resize_type": "scale width", "width": 5}) == [("scale", 5, 10, "area",
                                                                                        "disabled")]


def test_batch_nodes(graph_server, loaded):
    inputs, _, load = loaded
    p: dict = {}
    img, img_b, rgba = load(p, "img"), load(p, "img_b"), load(p, "img_rgba")
    p["batch"] = {"class_type": "BatchImagesNode", "inputs": {"images.image0": img, "images.image1": img_b}}
    p["classic"] = {"class_type": "ImageBatch", "inputs": {"image1": img, "image2": img_b}}
    p["alpha"] = {"class_type": "BatchImagesNode", "inputs": {"images.image0": img_b, "images.image1": rgba}}
    p["masks"] = {"class_type": "BatchMasksNode", "inputs": {"masks.mask0": load(p, "mask"),
                                                             "masks.mask1": load(p, "mask_small")}}
    p["latents"] = {"class_type": "BatchLatentsNode", "inputs": {"latents.latent0": load(p, "lat", latent=True),
                                                                 "latents.latent1": load(p, "lat_small", latent=True)}}
    for name in ("batch", "classic", "alpha", "masks", "latents"):
        _probe(p, [name, 0], name)
    out = graph_server.run(p)
    assert np.array_equal(out["batch"], out["classic"])
    assert out["alpha"].shape == (3, 9, 10, 4) and (out["alpha"][0, ..., 3] == 1.0).all()
    assert out["masks"].shape == (3, 12, 16)
    assert np.array_equal(out["masks"][:2], inputs["mask"])
    assert out["latents"]["samples"].shape == (3, 4, 6, 8) and out["latents"]["batch_index"] == [0, 1, 0]


@pytest.mark.parametrize("method", ["reinhard_lab", "mkl_lab", "histogram"])
def test_color_transfer_moves_colours_to_the_reference(graph_server, loaded, method):
    inputs, _, load = loaded
    p: dict = {}
    p["ct"] = {"class_type": "ColorTransfer", "inputs": {
        "image_target": load(p, "img"), "image_ref": load(p, "shapes"), "method": method,
        "source_stats": "uniform", "strength": 1.0}}
    p["half"] = {"class_type": "ColorTransfer", "inputs": {
        "image_target": load(p, "img"), "image_ref": load(p, "shapes"), "method": method,
        "source_stats": "target_frame", "source_stats.target_index": 1, "strength": 0.0}}
    _probe(p, ["ct", 0], "ct")
    _probe(p, ["half", 0], "zero")
    out = graph_server.run(p)
    target, ref = torch.from_numpy(inputs["img"]), torch.from_numpy(inputs["shapes"])
    got = torch.from_numpy(out["ct"])
    assert got.shape == target.shape and np.array_equal(out["zero"], inputs["img"])

    def mean_lab(x: torch.Tensor) -> torch.Tensor:
        if method == "histogram":  # matched per RGB channel
            return x.mean(dim=(0, 1, 2)) * 100
        return rgb_to_lab(x.permute(0, 3, 1, 2)).mean(dim=(0, 2, 3))

    before = (mean_lab(target) - mean_lab(ref)).abs().sum()
    after = (mean_lab(got) - mean_lab(ref)).abs().sum()
    assert after < before / 3


def test_crop_nodes_and_bounding_boxes(graph_server, loaded):
    inputs, comfy, load = loaded
    p: dict = {}
    img = load(p, "img")
    p["crop"] = {"class_type": "ImageCropV2", "inputs": {"image": img,
                                                         "crop_region": {"x": 3, "y": 2, "width": 7, "height": 5}}}
    p["box"] = {"class_type": "PrimitiveBoundingBox", "inputs": {"x": 2, "y": 3, "width": 8, "height": 6}}
    p["black"] = {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 12, "batch_size": 1, "color": 0}}
    p["draw"] = {"class_type": "DrawBBoxes", "inputs": {"image": ["black", 0], "bboxes": ["box", 0]}}
    p["draw_blank"] = {"class_type": "DrawBBoxes", "inputs": {"bboxes": ["box", 0]}}
    _probe(p, ["crop", 0], "crop")
    _probe(p, ["box", 0], "box")
    _probe(p, ["draw", 0], "draw")
    _probe(p, ["draw_blank", 0], "draw_blank")
    entry = graph_server.wait(graph_server.queue(p))
    out = graph_server.run(p)
    assert np.array_equal(out["crop"], comfy["crop.0"])  # ImageCrop's maths
    assert entry["outputs"]["crop"]["images"][0]["type"] == "temp"  # a preview of the crop
    assert out["box"] == {"x": 2, "y": 3, "width": 8, "height": 6}
    drawn = out["draw"][0]
    assert drawn[3, 2].tolist() == [1.0, 0.0, 0.0] and drawn[6, 6].tolist() == [0.0, 0.0, 0.0]
    assert out["draw_blank"].shape == (1, 9, 10, 3)


def test_crop_image_to_mask(graph_server):
    image = np.zeros((1, 40, 60, 3), np.float32)
    image[0, 10:20, 30:50] = (0.2, 0.6, 1.0)
    mask = np.zeros((1, 40, 60), np.float32)
    mask[0, 10:20, 30:50] = 1.0
    folder = graph_server.input_dir / "probes"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "subject.npy", image)
    np.save(folder / "subject_mask.npy", mask)
    p = {"i": {"class_type": "TestLoad", "inputs": {"name": "subject.npy"}},
         "m": {"class_type": "TestLoad", "inputs": {"name": "subject_mask.npy"}},
         "crop": {"class_type": "ImageCropToMask", "inputs": {"images": ["i", 0], "masks": ["m", 0], "width": 64,
                                                              "height": 64, "pad_factor": 1.5, "grow_mask": 0,
                                                              "background": "#ff0000"}}}
    _probe(p, ["crop", 0], "crop")
    out = graph_server.run(p)["crop"][0]
    assert out.shape == (64, 64, 3)
    assert np.allclose(out[32, 32], (0.2, 0.6, 1.0), atol=0.02)  # the subject is centred
    assert np.allclose(out[2, 32], (1.0, 0.0, 0.0), atol=0.02)  # with the background around it


def test_resolution_longer_edge_colour_histogram_curve(graph_server, loaded):
    inputs, _, load = loaded
    p: dict = {
        "res": {"class_type": "ResolutionSelector", "inputs": {"aspect_ratio": "16:9 (Widescreen)",
                                                               "megapixels": 1.0, "multiple": 8}},
        "res64": {"class_type": "ResolutionSelector", "inputs": {"aspect_ratio": "1:1 (Square)", "megapixels": 0.5,
                                                                 "multiple": 64}},
        "color": {"class_type": "ColorToRGBInt", "inputs": {"color": "#0a929980"}},
        "curve": {"class_type": "CurveEditor", "inputs": {
            "curve": {"points": [[0, 0], [0.5, 0.7], [1, 1]], "interpolation": "monotone_cubic"}}},
    }
    p["longer"] = {"class_type": "ResizeImagesByLongerEdge", "inputs": {"images": load(p, "img_tall"),
                                                                         "longer_edge": 10}}
    p["hist"] = {"class_type": "ImageHistogram", "inputs": {"image": load(p, "img")}}
    p["curve_h"] = {"class_type": "CurveEditor", "inputs": {"curve": {"points": [[0, 0], [1, 1]]},
                                                            "histogram": ["hist", 1]}}
    for name, index in (("res", 0), ("res", 1), ("res64", 0), ("color", 0), ("color", 1), ("color", 2),
                        ("longer", 0), ("hist", 0), ("hist", 1), ("hist", 2), ("curve", 0), ("curve_h", 0)):
        _probe(p, [name, index], f"{name}{index}")
    entry = graph_server.wait(graph_server.queue(p))
    out = graph_server.run(p)
    assert (out["res0"], out["res1"], out["res640"]) == (1368, 768, 704)
    assert (out["color0"], out["color1"], out["color2"]) == (0x0A9299, "#0a9299", pytest.approx(128 / 255))
    assert out["longer0"].shape == (1, 10, 3, 3)
    red = np.clip(inputs["img"][0, ..., 0] * 255, 0, 255).astype(np.uint8)
    assert out["hist2"] == np.bincount(red.ravel(), minlength=256).tolist() and sum(out["hist0"]) <= 12 * 16
    assert len(entry["outputs"]["curve_h"]["histogram"]) == 256
    assert "Curve" in out["curve0"]


def test_create_bounding_boxes(graph_server):
    state = [{"x": 100, "y": 50, "width": 200, "height": 100,
              "metadata": {"type": "text", "text": "Title", "desc": "serif", "palette": ["#ff0000", "nope"]}},
             {"x": 0, "y": 0, "width": 1000, "height": 500, "metadata": {"type": "obj", "desc": "sky"}}]
    p = {
        "boxes": {"class_type": "CreateBoundingBoxes", "inputs": {"width": 1000, "height": 500,
                                                                  "editor_state": {"__value__": state}}},
        "upstream": {"class_type": "CreateBoundingBoxes", "inputs": {
            "width": 1000, "height": 500, "editor_state": {"__value__": state},
            "bboxes": '[{"type": "obj", "bbox": [0, 500, 1000, 1000], "desc": "right half"}]'}},
    }
    for name in ("boxes", "upstream"):
        for index, output in enumerate(("preview", "bboxes", "elements")):
            _probe(p, [name, index], f"{name}_{output}")
    entry = graph_server.wait(graph_server.queue(p))
    out = graph_server.run(p)
    assert out["boxes_preview"].shape == (1, 500, 1000, 3)
    assert out["boxes_bboxes"] == [[{"x": 100, "y": 50, "width": 200, "height": 100},
                                    {"x": 0, "y": 0, "width": 1000, "height": 500}]]
    assert out["boxes_elements"][0] == {"type": "text", "bbox": [100, 100, 300, 300], "text": "Title",
                                        "desc": "serif", "color_palette": ["#FF0000"]}
    assert out["upstream_bboxes"] == [[{"x": 500, "y": 0, "width": 500, "height": 500}]]
    assert entry["outputs"]["upstream"]["dims"] == [1000, 500]
    assert entry["outputs"]["upstream"]["input_bboxes"][0]["metadata"]["desc"] == "right half"
    background = out["boxes_preview"][0, 250, 500]
    assert np.allclose(background, 32 / 255) and out["boxes_preview"].max() > 0.5  # grey canvas, drawn boxes
