"""MoGe through the server: the frontend's depth-estimation template, converted and run, and each rendering."""

from __future__ import annotations

import io

import numpy as np
import pytest
from _files_moge import write_file
from _templates import template
from test_family_ltx2_server import image

pytestmark = pytest.mark.slow

MODEL = "moge_2_vitl_normal_fp16.safetensors"


def place_model(graph_server) -> None:
    target = graph_server.models_dir("geometry_estimation") / MODEL
    if not target.exists():
        write_file(target)


def fetch(graph_server, item: dict) -> np.ndarray:
    from PIL import Image

    r = graph_server.server.get("/view", params={k: item[k] for k in ("filename", "subfolder", "type")})
    assert r.status_code == 200
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def test_depth_estimation_template(graph_server):
    """utility_moge_depth_estimation: the image (its resize switched off below 2048 pixels), MoGeInference at
    resolution level 2, and MoGeRender's coloured depth, grey depth and mask previewed."""
    place_model(graph_server)
    image(graph_server, "alien_world.png", (48, 80))
    converted = graph_server.server.post("/api/workflows/convert",
                                         json={"workflow": template("utility_moge_depth_estimation")}).json()
    assert converted["missing_nodes"] == []
    prompt = converted["prompt"]
    renders = sorted(n["inputs"]["output"] for n in prompt.values() if n["class_type"] == "MoGeRender")
    assert renders == ["depth", "depth_colored", "mask"]
    outputs = graph_server.outputs(prompt)
    images = [fetch(graph_server, item) for out in outputs.values() for item in out.get("images", [])]
    assert len(images) == 3 and all(i.shape == (48, 80, 3) for i in images)
    grey = [i for i in images if (i[..., 0] == i[..., 1]).all() and (i[..., 1] == i[..., 2]).all()]
    coloured = [i for i in images if not (i[..., 0] == i[..., 2]).all()]
    assert len(grey) == 2 and len(coloured) == 1  # depth and mask are grey, turbo is not
    assert all(i.std() > 0 for i in images)


@pytest.mark.parametrize("output", ["normal_opengl", "normal_directx"])
def test_normal_maps_differ_only_in_green(graph_server, output):
    place_model(graph_server)
    image(graph_server, "photo.png", (40, 56))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "LoadMoGeModel", "inputs": {"model_name": MODEL}},
        "3": {"class_type": "MoGeInference", "inputs": {
            "moge_model": ["2", 0], "image": ["1", 0], "resolution_level": 0, "fov_x_degrees": 50.0,
            "batch_size": 1, "force_projection": True, "apply_mask": False}},
        "4": {"class_type": "MoGeRender", "inputs": {"moge_geometry": ["3", 0], "output": "normal_opengl"}},
        "5": {"class_type": "MoGeRender", "inputs": {"moge_geometry": ["3", 0], "output": output}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    outputs = graph_server.outputs(prompt)
    opengl, other = (fetch(graph_server, outputs[n]["images"][0]).astype(int) for n in ("6", "7"))
    assert opengl.shape == (40, 56, 3)
    np.testing.assert_array_equal(opengl[..., [0, 2]], other[..., [0, 2]])
    if output == "normal_directx":
        assert np.abs(opengl[..., 1] + other[..., 1] - 255).max() <= 1  # green mirrored about 0.5
    else:
        np.testing.assert_array_equal(opengl, other)


def test_a_file_that_is_not_moge_fails_the_prompt_with_its_name(graph_server):
    from safetensors.numpy import save_file

    save_file({"weight": np.zeros(2, np.float32)}, str(graph_server.models_dir("geometry_estimation") / "x.safetensors"))
    error = graph_server.error({"1": {"class_type": "LoadMoGeModel", "inputs": {"model_name": "x.safetensors"}},
                                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert "x.safetensors: not a MoGe model" in error["exception_message"]
