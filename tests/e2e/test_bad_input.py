"""Inputs that used to crash a handler (500) get a 4xx that says what is wrong, and nothing is lost."""

from __future__ import annotations

import pytest

from comfy_kernel.http import MAX_JSON_DEPTH

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def nested(depth: int) -> str:
    """JSON text of ``depth`` nested containers (written out: encoders stop at a few hundred levels)."""
    opens = "".join('{"k":' if i % 2 else "[" for i in range(depth))
    closes = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return opens + '"leaf"' + closes


def post_raw(server, path: str, text: str):
    return server.post(path, content=text, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("form", [
    {"files": {"image": ("a" * 252 + ".png", PNG, "image/png")}},  # 256 bytes
    {"files": {"image": ("é" * 126 + ".png", PNG, "image/png")}},  # 256 bytes in UTF-8, 130 characters
    {"files": {"image": ("ok.png", PNG, "image/png")}, "data": {"subfolder": "s" * 256}},
    {"files": {"image": ("ok.png", PNG, "image/png")}, "data": {"subfolder": "fine/" + "s" * 300 + "/x"}},
])
def test_upload_names_over_255_bytes_are_refused(server, form):
    r = server.post("/upload/image", **form)
    assert r.status_code == 400, r.text
    assert "255 bytes" in r.json()["error"]["message"]
    assert "unhandled error" not in server.log()


def test_view_with_an_overlong_subfolder_is_a_400(server):
    r = server.get("/view", params={"filename": "a.png", "subfolder": "s" * 300, "type": "input"})
    assert r.status_code == 400 and "255 bytes" in r.json()["message"]


def test_renamed_upload_that_would_grow_too_long_is_refused(server):
    name = "b" * 251 + ".png"  # 255 bytes: allowed, but "<stem> (1).png" is not
    first = server.post("/upload/image", files={"image": (name, PNG, "image/png")})
    assert first.status_code == 200 and first.json()["name"] == name
    second = server.post("/upload/image", files={"image": (name, PNG + b"other", "image/png")})
    assert second.status_code == 400, second.text
    assert "unhandled error" not in server.log()


def test_json_nested_too_deeply_is_refused_at_the_door(server):
    for depth in (MAX_JSON_DEPTH + 1, 300, 1000):
        r = post_raw(server, "/prompt", '{"prompt": {}, "extra_data": {"deep": ' + nested(depth) + "}}")
        assert r.status_code == 400, (depth, r.text)
        error = r.json()["error"]
        assert error["type"] == "json_too_deep" and str(MAX_JSON_DEPTH) in error["message"]
    # a deep but allowed body reaches the route (here: refused for its empty prompt, not its depth)
    r = post_raw(server, "/prompt", '{"prompt": {}, "extra_data": {"deep": ' + nested(MAX_JSON_DEPTH - 5) + "}}")
    assert r.status_code == 400 and r.json()["error"]["type"] != "json_too_deep"
    assert post_raw(server, "/queue", '{"delete": ' + nested(400) + "}").status_code == 400
    assert "unhandled error" not in server.log()
    assert server.get("/queue").status_code == 200


def test_the_deepest_allowed_body_is_stored_and_read_back(tmp_path):
    from tests.e2e.execution_helpers import Client, start_server

    srv = start_server(tmp_path / "base")
    client = Client(srv)
    try:
        deep = nested(MAX_JSON_DEPTH - 2)  # the whole body is MAX_JSON_DEPTH levels deep
        prompt = '{"1": {"class_type": "TestOutput", "inputs": {"value": 1}}}'
        r = post_raw(srv, "/prompt", '{"prompt": ' + prompt + ', "client_id": "' + client.client_id
                     + '", "extra_data": {"deep": ' + deep + "}}")
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        client.wait(prompt_id)
        entry = srv.get(f"/history/{prompt_id}").json()[prompt_id]
        assert entry["status"]["status_str"] == "success" and "deep" in entry["prompt"][3]
        assert srv.get(f"/api/jobs/{prompt_id}").status_code == 200
        assert "unhandled error" not in srv.log()
    finally:
        client.close()
        srv.stop()
        srv.client.close()
