"""Downloads, exports, remote metadata, from-workflow and task records over real HTTP."""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
import time
import zipfile

import blake3
import pytest

from comfy_kernel.testing import ServerProcess
from plugins.assets.tests.conftest import upload


class _Handler(http.server.SimpleHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if self.path.startswith("/hang"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            _Handler.release.wait(60)
            return
        super().do_GET()


@pytest.fixture(scope="module")
def files_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    (root / "model.safetensors").write_bytes(os.urandom(3_000_000))
    (root / "small.txt").write_bytes(b"hello asset world")
    handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    _Handler.release.set()
    httpd.shutdown()
    httpd.server_close()


def wait_task(srv, task_id: str, timeout: float = 30, headers=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = srv.get(f"/api/tasks/{task_id}", headers=headers or {}).json()
        if task["status"] in ("completed", "failed"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def test_download_with_progress_and_hash_check(server, files_server):
    base, root = files_server
    data = (root / "model.safetensors").read_bytes()
    digest = "blake3:" + blake3.blake3(data).hexdigest()
    with server.ws(client_id="dl-client") as ws:
        r = server.post("/api/assets/download", json={"source_url": f"{base}/model.safetensors",
                                                      "tags": ["models"], "hash": digest})
        assert r.status_code == 202, r.text
        task = wait_task(server, r.json()["task_id"])
        assert task["status"] == "completed", task
        messages = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=5)
            if isinstance(msg, str):
                parsed = json.loads(msg)
                if parsed["type"] == "asset_download":
                    messages.append(parsed["data"])
                    if parsed["data"]["status"] == "completed":
                        break
    assert messages and messages[-1]["status"] == "completed" and messages[-1]["progress"] == 1.0
    assert messages[-1]["asset_id"] == task["result"]["asset_id"]
    asset = server.get(f"/api/assets/{task['result']['asset_id']}").json()
    assert asset["asset_hash"] == digest and asset["name"] == "model.safetensors" and asset["tags"] == ["models"]
    assert server.get(f"/api/assets/{asset['id']}/content").content == data

    # Known content answers at once with a reference.
    again = server.post("/api/assets/download", json={"source_url": f"{base}/model.safetensors", "hash": digest})
    assert again.status_code == 200 and again.json()["created_new"] is False

    bad = server.post("/api/assets/download", json={"source_url": f"{base}/small.txt",
                                                    "hash": "blake3:" + "0" * 64})
    failed = wait_task(server, bad.json()["task_id"])
    assert failed["status"] == "failed" and "mismatch" in failed["error_message"]
    missing = server.post("/api/assets/download", json={"source_url": f"{base}/nope.bin"})
    assert wait_task(server, missing.json()["task_id"])["status"] == "failed"
    for body in [{}, {"source_url": "file:///etc/passwd"}, {"source_url": "ftp://x/y"}, {"source_url": 5},
                 {"source_url": f"{base}/x", "hash": "nothex"}]:
        assert server.post("/api/assets/download", json=body).status_code == 400, body

    # The cloud's JSON form of POST /api/assets is a download too.
    cloud = server.post("/api/assets", json={"url": f"{base}/small.txt", "name": "greeting.txt"})
    assert cloud.status_code == 202
    done = wait_task(server, cloud.json()["task_id"])
    assert server.get(f"/api/assets/{done['result']['asset_id']}").json()["name"] == "greeting.txt"

    listed = server.get("/api/tasks", params={"task_name": "asset_download", "status": "failed"}).json()
    assert listed["pagination"]["total"] >= 2 and all(t["status"] == "failed" for t in listed["tasks"])
    assert server.get("/api/tasks/unknown").status_code == 404
    assert server.get("/api/tasks", params={"created_after": "yesterday"}).status_code == 400


def test_remote_metadata(server, files_server):
    base, _ = files_server
    r = server.get("/api/assets/remote-metadata", params={"url": f"{base}/model.safetensors"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["content_length"] == 3_000_000 and body["filename"] == "model.safetensors"
    assert body["tags"] == ["models"] and body["validation"]["is_valid"] is True
    assert server.get("/api/assets/remote-metadata", params={"url": "nope"}).status_code == 400
    assert server.get("/api/assets/remote-metadata", params={"url": f"{base}/missing"}).status_code == 422


def test_export_zip(server):
    a = upload(server, b"first file", "one.txt").json()
    b = upload(server, b"second file", "two.txt").json()
    c = upload(server, b"third file", "one.txt").json()
    with server.ws(client_id="export-client") as ws:
        r = server.post("/api/assets/export", json={"asset_ids": [a["id"], b["id"], c["id"]],
                                                    "naming_strategy": "preserve"})
        assert r.status_code == 202, r.text
        task = wait_task(server, r.json()["task_id"])
        assert task["status"] == "completed", task
        seen = []
        while True:
            parsed = json.loads(ws.recv(timeout=5))
            if parsed["type"] == "asset_export":
                seen.append(parsed["data"])
                if parsed["data"]["status"] == "completed":
                    break
    assert seen[-1]["assets_total"] == 2 and seen[-1]["assets_failed"] == 0
    name = task["result"]["export_name"]
    info = server.get(f"/api/assets/exports/{name}")
    assert info.status_code == 200 and "url" in info.json()
    zipped = server.get(info.json()["url"])
    assert zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        assert sorted(zf.namelist()) == ["one.txt", "two.txt"]
        assert zf.read("one.txt") == b"first file"

    r = server.post("/api/assets/export", json={"asset_ids": [a["id"], c["id"]], "naming_strategy": "asset_id"})
    task = wait_task(server, r.json()["task_id"])
    data = server.get(f"/api/assets/exports/{task['result']['export_name']}?download=true").content
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted([a["id"] + ".txt", c["id"] + ".txt"])

    assert server.post("/api/assets/export", json={}).status_code == 400
    assert server.post("/api/assets/export", json={"asset_ids": ["missing"]}).status_code == 404
    assert server.post("/api/assets/export", json={"asset_ids": [a["id"]], "naming_strategy": "x"}).status_code == 400
    assert server.get("/api/assets/exports/..%2F..%2Fetc").status_code in (400, 404)
    assert server.get("/api/assets/exports/assets-00000000-20260101T000000.zip").status_code == 404


def test_from_workflow(server):
    asset = upload(server, b"an input image", "photo.png").json()
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
                "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "absent.safetensors"}},
                "3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["2", 0]}}}
    r = server.post("/api/assets/from-workflow", json={"workflow_api_json": workflow})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [a["id"] for a in body["assets"]] == [asset["id"]] and body["assets"][0]["in_library"] is True
    assert [m["name"] for m in body["missing"]] == ["absent.safetensors"] and body["missing"][0]["model"]
    assert server.post("/api/assets/from-workflow", json={"workflow_api_json": []}).status_code == 400


def test_interrupted_task_is_failed_after_restart(tmp_path, files_server):
    base, _ = files_server
    srv = ServerProcess(tmp_path / "crash").start()
    try:
        r = srv.post("/api/assets/download", json={"source_url": f"{base}/hang"})
        task_id = r.json()["task_id"]
        deadline = time.monotonic() + 10
        while srv.get(f"/api/tasks/{task_id}").json()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.kill()
        srv.start()
        task = srv.get(f"/api/tasks/{task_id}").json()
        assert task["status"] == "failed" and "restart" in task["error_message"]
        assert srv.get("/api/tasks").json()["pagination"]["total"] == 1
    finally:
        srv.stop()
        srv.client.close()
