"""The last three cloud operations over a real server: job status, mask layers, video metadata."""

from __future__ import annotations

import os
import time

import billing_helpers as h
import numpy as np
import pytest
from PIL import Image

from comfy_kernel.testing import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = h.prepare_base(tmp_path_factory.mktemp("cloud-ops") / "base")
    with ServerProcess(base, *h.disable_all_but("billing"), "--multi-user", "--cpu") as srv:
        yield srv


def job(server, pid: str, user: str = "ann") -> tuple[int, dict]:
    r = server.get(f"/api/job/{pid}/status", headers={"Comfy-User": user})
    return r.status_code, r.json()


def test_job_status_follows_a_prompt_and_stays_private(server):
    ann = {"Comfy-User": "ann"}
    slow = server.post("/api/prompt", json={"prompt": h.workflow(1, 1.0)}, headers=ann).json()["prompt_id"]
    queued = server.post("/api/prompt", json={"prompt": h.workflow(2, 0.0)}, headers=ann).json()["prompt_id"]
    deadline = time.monotonic() + 20
    while job(server, slow)[1]["status"] != "in_progress" and time.monotonic() < deadline:
        time.sleep(0.02)
    code, body = job(server, slow)
    assert code == 200 and body["status"] == "in_progress" and body["id"] == slow
    assert job(server, queued)[1]["status"] == "pending"
    assert job(server, slow, user="bob")[0] == 404  # another owner's job is not found, not forbidden
    while job(server, queued)[1]["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    code, body = job(server, queued)
    assert body["status"] == "completed" and body["error_message"] is None
    assert body["created_at"] <= body["updated_at"] and body["created_at"].endswith("Z")
    bad = {"1": {"class_type": "BillingLoadModel", "inputs": {"ckpt_name": "tiny.safetensors"}},
           "2": {"class_type": "BillingSleep", "inputs": {"value": 3, "seconds": 0.0, "model": ["1", 0]}},
           "3": {"class_type": "BillingImage", "inputs": {"value": ["2", 0], "width": 1, "height": 1,
                                                          "batch_size": 1}}}
    # A failing prompt: a file that disappears between validation and execution.
    ckpt = os.path.join(server.base_dir, "models", "checkpoints", "gone.safetensors")
    with open(os.path.join(server.base_dir, "models", "checkpoints", "tiny.safetensors"), "rb") as f:
        data = f.read()
    with open(ckpt, "wb") as f:
        f.write(data)
    bad["1"]["inputs"]["ckpt_name"] = "gone.safetensors"
    blocker = server.post("/api/prompt", json={"prompt": h.workflow(4, 0.5)}, headers=ann).json()["prompt_id"]
    failing = server.post("/api/prompt", json={"prompt": bad}, headers=ann).json()["prompt_id"]
    os.remove(ckpt)
    while job(server, failing)[1]["status"] in ("pending", "in_progress") and time.monotonic() < deadline + 20:
        time.sleep(0.05)
    code, body = job(server, failing)
    assert body["status"] == "error" and "gone.safetensors" in body["error_message"]
    assert job(server, blocker)[1]["status"] == "completed"
    assert job(server, "00000000-0000-4000-8000-000000000000")[0] == 404


def test_mask_layers_of_one_edit(server):
    folder = os.path.join(server.base_dir, "input", "clipspace")
    os.makedirs(folder, exist_ok=True)
    for layer in ("mask", "paint", "painted-masked"):
        Image.new("RGBA", (4, 4)).save(os.path.join(folder, f"clipspace-{layer}-1712345678901.png"))
    Image.new("RGBA", (4, 4)).save(os.path.join(folder, "clipspace-painted-999.png"))
    expected = {"mask": "clipspace-mask-1712345678901.png", "paint": "clipspace-paint-1712345678901.png",
                "painted": None, "painted_masked": "clipspace-painted-masked-1712345678901.png"}
    for name in ("clipspace/clipspace-painted-masked-1712345678901.png [input]",
                 "clipspace/clipspace-mask-1712345678901.png"):
        r = server.get("/api/files/mask-layers", params={"filename": name})
        assert r.status_code == 200 and r.json() == expected
    r = server.get("/api/files/mask-layers", params={"filename": "clipspace-paint-1712345678901.png",
                                                     "subfolder": "clipspace"})
    assert r.json() == expected
    for name in ("clipspace/clipspace-mask-1.png", "photo.png", "../clipspace/clipspace-mask-1712345678901.png",
                 "clipspace/clipspace-mask-1712345678901.png [output]", ""):
        r = server.get("/api/files/mask-layers", params={"filename": name})
        assert r.status_code == 404 and r.json()["code"] == "not_found", name


def test_video_metadata(server):
    av = pytest.importorskip("av")
    out = os.path.join(server.base_dir, "output", "clips")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "clip.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    r = server.get("/api/vhs/queryvideo", params={"filename": "clip.mp4", "subfolder": "clips", "type": "output"})
    assert r.status_code == 200, r.text
    source = r.json()["source"]
    assert source["size"] == [64, 48] and source["fps"] == pytest.approx(12)
    assert source["frames"] == 24 and source["duration"] == pytest.approx(2.0, abs=0.1)
    loaded = server.get("/vhs/queryvideo", params={"filename": "clip.mp4 [output]", "subfolder": "clips",
                                                   "force_rate": "6", "skip_first_frames": "6",
                                                   "select_every_nth": "2"}).json()["loaded"]
    assert loaded["fps"] == pytest.approx(3) and loaded["duration"] == pytest.approx(source["duration"] - 1.0)

    frames = [Image.new("RGBA", (10, 6), (i * 40, 0, 0, 128)) for i in range(5)]
    gif = os.path.join(server.base_dir, "input", "anim.webp")
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    r = server.get("/api/vhs/queryvideo", params={"filename": "anim.webp", "type": "input"}).json()["source"]
    assert r == {"size": [10, 6], "fps": pytest.approx(10), "frames": 5, "duration": pytest.approx(0.5),
                 "alpha": True}

    assert server.get("/api/vhs/queryvideo").json() == {"message": "missing required query parameter: filename"}
    assert server.get("/api/vhs/queryvideo").status_code == 400
    assert server.get("/api/vhs/queryvideo", params={"filename": "nope.mp4"}).status_code == 404
    assert server.get("/api/vhs/queryvideo", params={"filename": "clip.mp4", "type": "models"}).status_code == 400
    assert server.get("/api/vhs/queryvideo", params={"filename": "clip.mp4", "subfolder": "../output/clips",
                                                     "type": "input"}).status_code == 400
    with open(os.path.join(server.base_dir, "output", "notes.mp4"), "wb") as f:
        f.write(b"not a video at all")
    broken = server.get("/api/vhs/queryvideo", params={"filename": "notes.mp4"})
    assert broken.status_code == 415 and broken.json()["code"] == "unsupported_media_type"
