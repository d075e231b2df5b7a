"""Seeding the model/input/output folders, pruning, and prompt outputs as assets."""

from __future__ import annotations

import json
import os
import textwrap
import time

import blake3


def wait_seed(srv, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = srv.get("/api/assets/seed/status").json()
        if status["status"] not in ("running",):
            return status
        time.sleep(0.05)
    raise AssertionError(f"seed did not finish: {status}")


def test_seed_incremental_and_prune(make_server, tmp_path):
    base = tmp_path / "seedbase"
    ckpt = base / "models" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "m1.safetensors").write_bytes(b"model one" * 1000)
    (ckpt / "m2.safetensors").write_bytes(b"model two" * 1000)
    (base / "input").mkdir()
    (base / "input" / "in.png").write_bytes(b"input image")
    (base / "output").mkdir()
    (base / "output" / "out.png").write_bytes(b"input image")  # same bytes as the input
    srv = make_server(base=base)
    with srv.ws(client_id="seed-watch") as ws:
        r = srv.post("/api/assets/seed", json={})
        assert r.status_code == 200 and r.json()["status"] == "started"
        status = wait_seed(srv)
        events = []
        while True:
            msg = json.loads(ws.recv(timeout=5))
            if msg["type"] == "assets_seed":
                events.append(msg["data"])
                if msg["data"]["status"] != "running":
                    break
    assert status["status"] == "completed" and status["files_hashed"] == 4 and status["assets_created"] == 4
    assert events[-1]["status"] == "completed"
    models = srv.get("/api/assets", params={"include_tags": "models,checkpoints"}).json()
    assert sorted(a["name"] for a in models["assets"]) == ["m1.safetensors", "m2.safetensors"]
    assert all(a["is_immutable"] for a in models["assets"])
    m1 = next(a for a in models["assets"] if a["name"] == "m1.safetensors")
    assert m1["asset_hash"] == "blake3:" + blake3.blake3(b"model one" * 1000).hexdigest()
    assert srv.get(f"/api/assets/{m1['id']}/content").content == b"model one" * 1000
    assert srv.request("DELETE", f"/api/assets/{m1['id']}").status_code == 403
    assert srv.request("HEAD", f"/api/assets/hash/{m1['asset_hash']}").status_code == 200

    # import copies a shared asset into the caller's own library
    imp = srv.post("/api/assets/import", json={"published_asset_ids": [m1["id"]]})
    assert imp.status_code == 200 and imp.json()["assets"][0]["is_immutable"] is False
    assert srv.post("/api/assets/import", json={"published_asset_ids": ["nope"]}).status_code == 400

    # unchanged files are not hashed again; a changed one is
    (ckpt / "m2.safetensors").write_bytes(b"model two, retrained")
    srv.post("/api/assets/seed", json={"roots": ["models"]})
    status = wait_seed(srv)
    assert status["files_skipped"] == 1 and status["files_hashed"] == 1 and status["assets_created"] == 0
    m2 = srv.get("/api/assets", params={"name_contains": "m2."}).json()["assets"][0]
    assert m2["size"] == len(b"model two, retrained")

    os.remove(ckpt / "m2.safetensors")
    pruned = srv.post("/api/assets/prune")
    assert pruned.status_code == 200 and pruned.json()["marked"] == 1
    assert srv.get("/api/assets", params={"name_contains": "m2."}).json()["total"] == 0
    assert srv.post("/api/assets/prune").json()["marked"] == 0

    assert srv.post("/api/assets/seed", json={"roots": ["/etc"]}).status_code == 400
    assert srv.post("/api/assets/seed", json={"roots": "models"}).status_code == 400
    assert srv.post("/api/assets/seed", content=b"{").status_code == 400


def test_seed_cancel(make_server, tmp_path):
    base = tmp_path / "cancelbase"
    inputs = base / "input"
    inputs.mkdir(parents=True)
    for i in range(3000):
        (inputs / f"f{i}.txt").write_bytes(os.urandom(64))
    srv = make_server(base=base)
    assert srv.post("/api/assets/seed/cancel").json()["status"] == "idle"
    srv.post("/api/assets/seed", json={"roots": ["input"]})
    assert srv.post("/api/assets/seed", json={"roots": ["input"]}).json()["status"] == "already_running"
    srv.post("/api/assets/seed/cancel")
    status = wait_seed(srv)
    assert status["status"] in ("cancelled", "completed")
    if status["status"] == "cancelled":
        assert status["files_scanned"] < 3000
    # a later full seed completes and creates each remaining file once
    srv.post("/api/assets/seed", json={"roots": ["input"]})
    status = wait_seed(srv)
    assert status["status"] == "completed"
    assert srv.get("/api/assets", params={"include_tags": "input", "limit": 1}).json()["total"] == 3000


NODE_PACK = textwrap.dedent('''
    import os

    class WriteOutputFile:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"text": ("STRING", {"default": "hi"})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def run(self, text):
            out = os.path.join(os.getcwd(), "output")
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "result.txt"), "w") as f:
                f.write(text)
            return {"ui": {"images": [{"filename": "result.txt", "subfolder": "", "type": "output"}]}}

    NODE_CLASS_MAPPINGS = {"WriteOutputFile": WriteOutputFile}
''')


def test_prompt_outputs_become_assets(make_server, tmp_path):
    base = tmp_path / "execbase"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "write_output.py").write_text(NODE_PACK)
    srv = make_server(base=base)
    if "WriteOutputFile" not in srv.get("/api/object_info").json():
        import pytest

        pytest.skip("the executor or custom-node loading is not available")
    r = srv.post("/api/prompt", json={"prompt": {"1": {"class_type": "WriteOutputFile",
                                                        "inputs": {"text": "made by a prompt"}}}})
    assert r.status_code == 200, r.text
    prompt_id = r.json()["prompt_id"]
    deadline = time.monotonic() + 30
    assets = []
    while time.monotonic() < deadline:
        assets = srv.get("/api/assets", params={"include_tags": "output"}).json()["assets"]
        if assets:
            break
        time.sleep(0.1)
    assert len(assets) == 1, srv.log()[-3000:]
    asset = assets[0]
    assert asset["job_id"] == prompt_id and asset["prompt_id"] == prompt_id and asset["name"] == "result.txt"
    assert srv.get(f"/api/assets/{asset['id']}/content").content == b"made by a prompt"

    # export by job id picks up the prompt's outputs
    r = srv.post("/api/assets/export", json={"job_ids": [prompt_id], "naming_strategy": "group_by_job_id"})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 30
    while (task := srv.get(f"/api/tasks/{r.json()['task_id']}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    import io
    import zipfile

    data = srv.get(f"/api/assets/exports/{task['result']['export_name']}", params={"download": "true"}).content
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [f"{prompt_id}/result.txt"]
