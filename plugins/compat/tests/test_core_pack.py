"""A pack subclassing core nodes and using the live NODE_CLASS_MAPPINGS (needs the core_nodes plugin)."""

from __future__ import annotations

import io

import pytest
from compat_helpers import Client, events, start

pytest.importorskip("comfy_kernel_core_nodes")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("core"), "core_pack", keep={"compat", "core_nodes"})
    yield srv
    srv.stop()
    srv.client.close()


def test_registry_view_includes_core_nodes(server):
    info = server.get("/object_info").json()
    assert "KSampler" in info and "CoreTeal" in info
    assert info["KSampler"]["python_module"] == "nodes"  # the pack could not take the core name
    assert info["CoreLateAdded"]["display_name"] == "Core Late"
    assert info["CoreSave"]["input"]["required"]["images"][0] == "IMAGE"  # inherited INPUT_TYPES
    with Client(server) as client:
        _, messages = client.run({"1": {"class_type": "CoreCount", "inputs": {}}})
    out = events(messages, "executed")[0]["output"]
    assert out["names"] == list(info)
    assert out["ksampler_display"] == [info["KSampler"]["display_name"]]


def test_subclassed_core_nodes_run(server):
    from PIL import Image

    prompt = {"1": {"class_type": "CoreTeal", "inputs": {"size": 4}},
              "2": {"class_type": "CoreSave", "inputs": {"images": ["1", 0], "filename_prefix": "core/teal"}}}
    with Client(server) as client:
        _, messages = client.run(prompt)
    image = events(messages, "executed")[0]["output"]["images"][0]
    assert image == {"filename": "teal_00001_.png", "subfolder": "core", "type": "output"}
    r = server.get("/view", params=image)
    assert r.status_code == 200
    png = Image.open(io.BytesIO(r.content))
    assert png.size == (4, 4) and png.convert("RGB").getpixel((0, 0)) == (0, 128, 128)
