"""The durable task queue (with ws progress and reboot) and model downloads."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from mgr_helpers import PackServer
from test_packs import wait_queue


def model_item(url: str, data: bytes | None = None, **kw) -> dict:
    item = {"name": "tiny", "type": "checkpoint", "base": "SD1.5", "save_path": "default",
            "filename": "tiny.safetensors", "url": url, "ui_id": "model-1"}
    if data is not None:
        item["size"] = str(len(data))
        item["sha256"] = hashlib.sha256(data).hexdigest()
    item.update(kw)
    return item


@pytest.mark.slow
def test_queue_survives_restart_and_reports_progress(tmp_path, http_dir):
    root, url = http_dir
    data = os.urandom(300_000)
    (root / "tiny.safetensors").write_bytes(data)
    base = tmp_path / "base"
    with PackServer(base, "--manager-security-level", "weak") as srv:
        assert srv.post("/manager/queue/install_model", json=model_item(f"{url}/tiny.safetensors", data)).status_code == 200
        assert srv.post("/manager/queue/update_comfyui").status_code == 200
        assert srv.get("/manager/queue/status").json() == {"total_count": 2, "done_count": 0,
                                                           "in_progress_count": 0, "is_processing": False}
    with PackServer(base, "--manager-security-level", "weak") as srv:
        assert srv.get("/manager/queue/status").json()["total_count"] == 2  # still there after a restart
        with srv.ws(client_id="watcher") as ws:
            ws.recv(timeout=10)  # the status greeting
            assert srv.post("/manager/queue/start").status_code == 200
            seen = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=30))
                if msg["type"] == "cm-queue-status":
                    seen.append(msg["data"])
                    if msg["data"]["status"] == "all-done":
                        break
        statuses = [m["status"] for m in seen]
        assert statuses[0] == "in_progress" and statuses[-2:] == ["done", "all-done"]
        done = seen[-2]
        assert done["model_result"] == {"model-1": "success"}
        assert "pip" in done["nodepack_result"]["comfyui"]  # update_comfyui answers truthfully
        assert (base / "models" / "checkpoints" / "tiny.safetensors").read_bytes() == data
        tasks = srv.get("/manager/queue/tasks").json()
        assert [t["status"] for t in tasks] == ["done", "failed"]
        assert srv.get("/manager/queue/start").status_code == 200  # nothing left; starts and ends
        assert srv.get("/manager/queue/reset").status_code == 200
        assert srv.get("/manager/queue/status").json()["total_count"] == 0


def test_model_resume_hash_and_refusals(start_server, http_dir):
    root, url = http_dir
    data = os.urandom(2_500_000)
    (root / "big.bin").write_bytes(data)
    srv = start_server("--manager-security-level", "weak")
    target = os.path.join(srv.base_dir, "models", "loras", "big.safetensors")
    os.makedirs(os.path.dirname(target), exist_ok=True)  # the server creates models/<folder> at start-up
    with open(target + ".part", "wb") as f:
        f.write(data[:1_000_000])  # an earlier, interrupted download
    item = model_item(f"{url}/big.bin", data, type="lora", filename="big.safetensors", ui_id="m2")
    assert srv.post("/manager/queue/install_model", json=item).status_code == 200
    bad = model_item(f"{url}/big.bin", data, type="vae", filename="bad.safetensors", ui_id="m3",
                     sha256="0" * 64)
    assert srv.post("/manager/queue/install_model", json=bad).status_code == 200
    tasks = wait_queue(srv)
    assert tasks[0]["status"] == "done" and tasks[0]["result"]["resumed_from"] == 1_000_000
    assert open(target, "rb").read() == data
    assert tasks[1]["status"] == "failed" and "sha256" in tasks[1]["result"]["msg"]
    vae_dir = os.path.join(srv.base_dir, "models", "vae")
    assert not os.path.exists(vae_dir) or os.listdir(vae_dir) == []
    # paths outside the model folders and non-http URLs are refused up front
    for hostile in (model_item(f"{url}/big.bin", save_path="../../user"),
                    model_item(f"{url}/big.bin", save_path="/tmp"),
                    model_item(f"{url}/big.bin", filename="../escape.bin"),
                    model_item(f"{url}/big.bin", save_path="checkpoints/../../../x"),
                    model_item("file:///etc/passwd"),
                    {"filename": "x"}):
        r = srv.post("/manager/queue/install_model", json=hostile)
        assert r.status_code == 400, (hostile, r.text)
    assert srv.get("/manager/queue/status").json()["total_count"] == 2
    assert "big.safetensors" in srv.get("/models/loras").json()


@pytest.mark.slow
def test_reboot_keeps_the_queue(tmp_path):
    with PackServer(tmp_path / "base") as srv:
        srv.post("/manager/queue/install", json={"id": "clipseg", "ui_id": "c"})
        pid = srv.proc.pid
        assert srv.post("/manager/reboot").status_code == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the second start-up, then for it to answer
            try:
                if srv.log().count("To see the GUI") == 2 and \
                        srv.get("/manager/queue/status", timeout=2).status_code == 200:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        assert srv.proc.poll() is None and srv.proc.pid == pid  # same process, re-executed
        assert srv.get("/manager/queue/status").json()["total_count"] == 1
        assert srv.log().count("To see the GUI") == 2
