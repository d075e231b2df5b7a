"""Per-user isolation of queue, history, jobs, WebSocket events and userdata on an --auth server."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from websockets.sync.client import connect

from plugins.multiuser.tests.conftest import AuthServer


def _paths(auth: AuthServer) -> set[str]:
    return {p for r in auth.admin.get("/api/admin/routes").json()["routes"] for p in r["paths"]}


def _prompt(value: int) -> dict:
    return {"1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def _drain(ws, seconds: float) -> list[str]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            message = ws.recv(timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        out.append(message if isinstance(message, str) else message.hex())
    return out


def test_queue_history_and_events_are_private(auth: AuthServer):
    if "/api/prompt" not in _paths(auth):
        pytest.skip("no executor routes in this installation")
    nodes = auth.admin.get("/api/object_info").json()
    if not {"PrimitiveInt", "PreviewAny"} <= set(nodes):
        pytest.skip("the core nodes are not installed")
    alice, bob = auth.new_user(), auth.new_user()
    ws_url = auth.url.replace("http://", "ws://") + "/ws?clientId="
    alice_cid, bob_cid = uuid.uuid4().hex, uuid.uuid4().hex
    with connect(ws_url + alice_cid, additional_headers={"X-API-Key": alice.api_key()}) as alice_ws, \
            connect(ws_url + bob_cid, additional_headers={"X-API-Key": bob.api_key()}) as bob_ws:
        alice_ws.recv(timeout=10)
        bob_ws.recv(timeout=10)
        value = 987654321
        queued = alice.post("/api/prompt", json={"prompt": _prompt(value), "client_id": alice_cid})
        assert queued.status_code == 200, queued.text
        prompt_id = queued.json()["prompt_id"]
        # Bob naming Alice's socket, or none, must not reach Alice's or anyone's socket.
        assert bob.post("/api/prompt", json={"prompt": _prompt(1), "client_id": alice_cid}).status_code == 200
        assert bob.post("/api/prompt", json={"prompt": _prompt(2)}).status_code == 200

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            entry = alice.get(f"/api/history/{prompt_id}").json()
            if prompt_id in entry:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the prompt did not finish")
        alice_messages = _drain(alice_ws, 1.5)
        bob_messages = _drain(bob_ws, 0.5)

    assert any(prompt_id in m for m in alice_messages)
    assert not any(prompt_id in m or str(value) in m for m in bob_messages)
    # Bob's own prompts, whatever client id they named, sent nothing to Alice.
    alice_prompt_ids = {json.loads(m).get("data", {}).get("prompt_id") for m in alice_messages if m.startswith("{")}
    assert alice_prompt_ids <= {prompt_id, None}

    assert prompt_id not in bob.get("/api/history").text
    assert bob.get(f"/api/history/{prompt_id}").json() == {}
    assert prompt_id not in bob.get("/api/queue").text
    if "/api/jobs/{job_id}" in _paths(auth):
        assert bob.get(f"/api/jobs/{prompt_id}").status_code == 404
        assert prompt_id not in bob.get("/api/jobs").text
    bob.post("/api/history", json={"delete": [prompt_id]})
    bob.post("/api/history", json={"clear": True})
    bob.post("/api/queue", json={"delete": [prompt_id]})
    assert prompt_id in alice.get(f"/api/history/{prompt_id}").json()


def test_userdata_and_settings_are_private(auth: AuthServer):
    paths = _paths(auth)
    if "/api/userdata" not in paths:
        pytest.skip("the userdata plugin is not installed")
    alice, bob = auth.new_user(), auth.new_user()
    assert alice.post("/api/userdata/workflows%2Fmine.json", content=b'{"a": 1}').status_code == 200
    assert bob.get("/api/userdata/workflows%2Fmine.json").status_code == 404
    assert "mine.json" not in bob.get("/api/userdata", params={"dir": "workflows"}).text
    assert alice.post("/api/settings/Comfy.Private", json="alice").status_code == 200
    assert bob.get("/api/settings/Comfy.Private").json() is None
    assert alice.get("/api/settings/Comfy.Private").json() == "alice"


def _wait_history(user, prompt_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = user.get(f"/api/history/{prompt_id}").json()
        if prompt_id in entry:
            return entry[prompt_id]
        time.sleep(0.2)
    pytest.fail("the prompt did not finish")


def test_output_files_are_served_to_their_owners_only(auth: AuthServer):
    nodes = auth.admin.get("/api/object_info").json()
    if "/api/prompt" not in _paths(auth) or not {"EmptyImage", "SaveImage"} <= set(nodes):
        pytest.skip("needs the executor and the core image nodes")
    alice, bob = auth.new_user(), auth.new_user()
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "private"}}}
    queued = alice.post("/api/prompt", json={"prompt": prompt})
    assert queued.status_code == 200, queued.text
    entry = _wait_history(alice, queued.json()["prompt_id"])
    image = entry["outputs"]["2"]["images"][0]
    params = {"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}
    assert alice.get("/api/view", params=params).status_code == 200
    assert alice.get("/view", params=params).status_code == 200
    assert bob.get("/api/view", params=params).status_code == 404
    assert bob.get("/api/view", params={**params, "filename": f"{image['filename']} [output]", "type": "input"}
                   ).status_code == 404
    assert auth.admin.get("/api/view", params=params).status_code == 200
    assert bob.get("/internal/files/output").status_code == 403


def test_uploads_to_output_belong_to_the_uploader(auth: AuthServer):
    alice, bob = auth.new_user(), auth.new_user()
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
    name = f"{uuid.uuid4().hex}.png"
    r = alice.post("/api/upload/image", files={"image": (name, png, "image/png")}, data={"type": "output"})
    assert r.status_code == 200, r.text
    params = {"filename": r.json()["name"], "subfolder": r.json()["subfolder"], "type": "output"}
    assert alice.get("/api/view", params=params).status_code == 200
    assert bob.get("/api/view", params=params).status_code == 404
    shared = alice.post("/api/upload/image", files={"image": ("in-" + name, png, "image/png")})
    assert shared.status_code == 200
    assert bob.get("/api/view", params={"filename": shared.json()["name"], "type": "input"}).status_code == 200


def test_another_owners_prompt_id_cannot_be_reused(auth: AuthServer):
    nodes = auth.admin.get("/api/object_info").json()
    if "/api/prompt" not in _paths(auth) or not {"PrimitiveInt", "PreviewAny"} <= set(nodes):
        pytest.skip("needs the executor and the core nodes")
    alice, bob = auth.new_user(), auth.new_user()
    prompt_id = str(uuid.uuid4())
    assert alice.post("/api/prompt", json={"prompt": _prompt(7), "prompt_id": prompt_id}).json()["prompt_id"] == prompt_id
    _wait_history(alice, prompt_id)
    taken = bob.post("/api/prompt", json={"prompt": _prompt(8), "prompt_id": prompt_id})
    assert taken.status_code == 200 and taken.json()["prompt_id"] != prompt_id
    _wait_history(bob, taken.json()["prompt_id"])
    entry = _wait_history(alice, prompt_id)
    assert entry["outputs"]["2"]["text"] == ["7"]
    own = alice.post("/api/prompt", json={"prompt": _prompt(9), "prompt_id": prompt_id})
    assert own.json()["prompt_id"] == prompt_id  # an owner may reuse its own id, as in ComfyUI
