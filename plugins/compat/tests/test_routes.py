"""A pack registering aiohttp routes on PromptServer.instance and sending ws messages."""

from __future__ import annotations

import struct

import pytest
from compat_helpers import Client, events, start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("routes"), "routes_pack")
    yield srv
    srv.stop()
    srv.client.close()


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_get_route_is_served_bare_and_under_api(server, prefix):
    r = server.get(f"{prefix}/routes_pack/hello", params={"name": "kernel"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"hello": "kernel", "method": "GET"}


def test_post_with_path_param_and_ws_broadcast(server):
    with Client(server) as client:
        r = server.post("/api/routes_pack/store/colour", json={"value": "teal"})
        assert r.status_code == 201 and r.json() == {"stored": "colour"}
        import json

        while True:
            msg = json.loads(client.ws.recv(timeout=10))
            if msg["type"] == "routes_pack.stored":
                break
        assert msg["data"] == {"key": "colour", "value": {"value": "teal"}}
    r = server.get("/routes_pack/store/colour")
    assert r.status_code == 200 and r.text == "teal" and r.headers["content-type"].startswith("text/plain")


def test_aiohttp_http_exception_becomes_its_status(server):
    r = server.get("/routes_pack/store/missing")
    assert r.status_code == 404 and r.text == "no missing"


def test_multipart_post(server):
    r = server.post("/routes_pack/upload", files={"image": ("a.png", b"12345", "image/png")}, data={"note": "hi"})
    assert r.status_code == 200
    assert r.json() == {"filename": "a.png", "size": 5, "note": "hi"}


def test_node_send_sync_reaches_its_client_and_on_prompt_handler_rewrites(server):
    prompt = {"7": {"class_type": "RoutesPing", "inputs": {"message": "rewrite-me"}}}
    with Client(server) as client:
        prompt_id, messages = client.run(prompt)
        binary = list(client.binary)
    pings = events(messages, "routes_pack.ping")
    assert pings == [{"message": "rewritten", "node": "7", "last_node_id": "7"}]
    assert events(messages, "executed")[0]["output"] == {"text": ["rewritten"]}
    # send_progress_text: a type-3 frame: event type, node id length, node id, text.
    texts = [b for b in binary if struct.unpack(">I", b[:4])[0] == 3]
    assert texts, "no progress text frame"
    # Outside a node, the server object remembers the last prompt's client and node.
    assert server.get("/routes_pack/last").json() == {"client_id": client.client_id, "last_node_id": "7",
                                                      "last_prompt_id": prompt_id}
    frame = texts[0][4:]
    (n,) = struct.unpack(">I", frame[:4])
    assert frame[4:4 + n] == b"7" and frame[4 + n:] == b"said rewritten"


def test_own_route_table_static_folder_and_on_startup(server):
    r = server.get("/api/routes_pack/extra/a/b.txt")
    assert r.status_code == 200
    assert r.json() == {"tail": "a/b.txt", "started": [True]}
    r = server.get("/routes_pack/static/hello.txt")
    assert r.status_code == 200 and r.text == "static text\n"


def test_load_custom_node_at_run_time(server, tmp_path):
    pack = tmp_path / "late_pack.py"
    pack.write_text("""
class LateNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "late"
    def run(self):
        return (1,)
NODE_CLASS_MAPPINGS = {"LateNode": LateNode}
""")
    assert "LateNode" not in server.get("/object_info").json()
    r = server.post("/routes_pack/load", json={"path": str(pack)})
    assert r.json()["loaded"] is True and "late_pack" in r.json()["dirs"]
    assert server.get("/object_info/LateNode").json()["LateNode"]["python_module"] == "custom_nodes.late_pack"
