"""Compose Camera Angle Prompt through the server: the shot wording and the orbit camera it describes."""

from __future__ import annotations

import math

import pytest
from _templates import template

pytestmark = pytest.mark.timeout(300)


def run(graph_server, horizontal: int, vertical: int, zoom: float) -> tuple[dict, str]:
    out = graph_server.run({
        "cam": {"class_type": "CameraAngle",
                "inputs": {"horizontal_angle": horizontal, "vertical_angle": vertical, "zoom": zoom}},
        "info": {"class_type": "TestProbe", "inputs": {"value": ["cam", 0], "name": "info"}},
        "text": {"class_type": "TestProbe", "inputs": {"value": ["cam", 1], "name": "text"}},
    })
    return out["info"], out["text"]


@pytest.mark.parametrize("horizontal,vertical,zoom,prompt", [
    (0, 0, 5.0, "front view eye-level shot medium shot"),
    (333, 17, 5.0, "front-left quarter view elevated shot medium shot"),  # the multi-angle template's setting
    (22, -16, 1.9, "front view low-angle shot wide shot"),
    (23, -15, 2.0, "front-right quarter view eye-level shot medium shot"),
    (180, 45, 6.0, "back view high-angle shot close-up"),
    (270, 60, 10.0, "left side view high-angle shot close-up"),
    (360, 30, 0.0, "front view elevated shot wide shot"),
])
def test_shot_description(graph_server, horizontal, vertical, zoom, prompt):
    assert run(graph_server, horizontal, vertical, zoom)[1] == prompt


def test_camera_info_orbits_the_subject(graph_server):
    info, _ = run(graph_server, 90, 30, 10.0)
    position = info["position"]
    # 6 units from the origin, azimuth 90 on +x, elevation 30 degrees up
    assert math.isclose(math.dist((0, 0, 0), (position["x"], position["y"], position["z"])), 6.0)
    assert math.isclose(position["x"], 6 * math.cos(math.radians(30)))
    assert math.isclose(position["y"], 3.0)
    assert abs(position["z"]) < 1e-9
    assert info["target"] == {"x": 0.0, "y": 0.0, "z": 0.0}
    assert (info["zoom"], info["cameraType"], info["fov"]) == (1.875, "perspective", 35.0)
    assert run(graph_server, 0, 0, 0.0)[0]["zoom"] == 1.0


def test_multi_angle_template_converts_with_every_node_here(graph_server):
    r = graph_server.server.post("/api/workflows/convert", json={"workflow": template("template_qwen_multiangle.app")})
    assert r.status_code == 200, r.text
    assert r.json()["missing_nodes"] == []
    (camera,) = [n["inputs"] for n in r.json()["prompt"].values() if n["class_type"] == "CameraAngle"]
    assert (camera["horizontal_angle"], camera["vertical_angle"], camera["zoom"]) == (333, 17, 5)
