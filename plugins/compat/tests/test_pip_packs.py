"""Node packs installed with pip: entry points in comfy_kernel.plugins and comfyui.custom_nodes.

Also failure isolation: a pack that fails to import and a node that raises
leave the server and the other packs working, and the failures are on
record for ``comfy-kernel plugins`` and the manager's import_fail_info.
"""

from __future__ import annotations

import os

import pytest
from compat_helpers import Client, events, start

from tests.fixtures.distributions import make_distribution

# Named to sort before "compat": pip packs must import ComfyUI's modules
# whatever their place in discovery order.
PACK_A = '''
import folder_paths
import nodes
from aiohttp import web
from server import PromptServer


@PromptServer.instance.routes.get("/pip_pack_a/info")
async def info(request):
    return web.json_response({"models_dir": folder_paths.models_dir, "max": nodes.MAX_RESOLUTION})


class PipA:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"default": 1, "min": 0, "max": nodes.MAX_RESOLUTION})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "double"
    OUTPUT_NODE = True
    CATEGORY = "pip"

    def double(self, n):
        return {"ui": {"value": [n * 2]}, "result": (n * 2,)}


class PipBoom:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "boom"
    OUTPUT_NODE = True
    CATEGORY = "pip"

    def boom(self, n):
        raise ValueError(f"boom {n}")


NODE_CLASS_MAPPINGS = {"PipA": PipA, "PipBoom": PipBoom}
NODE_DISPLAY_NAME_MAPPINGS = {"PipA": "Pip A"}
'''

PACK_B = '''
from comfy_api.latest import ComfyExtension, io


class PipB(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="PipB", display_name="Pip B", category="pip",
                         inputs=[io.String.Input("text", default="b")], outputs=[io.String.Output()],
                         is_output_node=True)

    @classmethod
    def execute(cls, text):
        return io.NodeOutput(text.upper(), ui={"text": [text.upper()]})


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [PipB]


def comfy_entrypoint():
    return Extension()
'''

PACK_BROKEN = '''
import folder_paths
raise ImportError("pip pack missing a dependency")
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_distribution(root, "Aaa-Pip-Pack", "ck_pip_pack_a", PACK_A, ep_name="Aaa-Pip-Pack")
    make_distribution(root, "comfyui-pip-pack-b", "ck_pip_pack_b", PACK_B, group="comfyui.custom_nodes")
    make_distribution(root, "comfyui-pip-broken", "ck_pip_broken", PACK_BROKEN, group="comfyui.custom_nodes")
    env = {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    srv = start(tmp_path_factory.mktemp("base"), "broken_pack", "plain_pack.py", keep={"compat", "manager"}, env=env)
    yield srv
    srv.stop()
    srv.client.close()


def test_both_groups_register_nodes(server):
    info = server.get("/object_info").json()
    assert info["PipA"]["display_name"] == "Pip A"
    assert info["PipA"]["python_module"] == "custom_nodes.Aaa-Pip-Pack"
    assert info["PipA"]["input"]["required"]["n"][1]["max"] == 16384
    assert info["PipB"]["display_name"] == "Pip B"
    assert info["PipB"]["python_module"] == "custom_nodes.comfyui-pip-pack-b"
    assert "PlainUpper" in info


def test_pip_pack_route(server):
    r = server.get("/api/pip_pack_a/info")
    assert r.status_code == 200
    assert r.json()["max"] == 16384 and r.json()["models_dir"].endswith("models")


def test_pip_nodes_run_and_a_raising_node_is_contained(server):
    with Client(server) as client:
        _, messages = client.run({"1": {"class_type": "PipA", "inputs": {"n": 21}},
                                  "2": {"class_type": "PipB", "inputs": {"text": "ok"}}})
        executed = {e["node"]: e["output"] for e in events(messages, "executed")}
        assert executed == {"1": {"value": [42]}, "2": {"text": ["OK"]}}

        _, messages = client.run({"1": {"class_type": "PipBoom", "inputs": {"n": 7}}})
        error = events(messages, "execution_error")[0]
        assert error["node_type"] == "PipBoom" and error["exception_type"] == "ValueError"
        assert error["exception_message"].startswith("boom 7")

        _, messages = client.run({"1": {"class_type": "PipA", "inputs": {"n": 5}}})
        assert events(messages, "executed")[0]["output"] == {"value": [10]}


def test_failures_are_recorded(server):
    records = {p["name"]: p for p in server.get("/api/plugins").json()}
    assert records["Aaa-Pip-Pack"]["status"] == "loaded"
    assert records["comfyui-pip-pack-b"]["status"] == "loaded"
    assert records["comfyui-pip-broken"]["status"] == "failed"
    assert "missing a dependency" in records["comfyui-pip-broken"]["error"]
    assert records["broken_pack"]["status"] == "failed"
    assert records["compat"]["status"] == "loaded"


@pytest.mark.parametrize("name", ["broken_pack", "comfyui-pip-broken"])
def test_import_fail_info(server, name):
    r = server.post("/customnode/import_fail_info", json={"cnr_id": name})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == name and "Traceback" in body["msg"]
