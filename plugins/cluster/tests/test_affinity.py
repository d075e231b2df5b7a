"""Model affinity: prompts go to the idle worker that already holds their model files."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from cluster_helpers import OTHER_PLUGINS, NatsServer, WorkerProcess, install_pack, wait_history
from comfy_kernel_cluster.affinity import better_idle_holder, held, model_files

from comfy_kernel.testing import TEST_POSTGRES, ServerProcess, database_for

REPO_ROOT = Path(__file__).resolve().parents[3]
PLUGINS_OFF = ",".join(p for p in OTHER_PLUGINS.split(",") if p != "core_nodes")
KEY = "/srv/a/models/checkpoints/sd/tiny.safetensors@1700000000:573#model.diffusion_model.#unet"


def test_model_files_are_the_inputs_naming_weights():
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd\\tiny.safetensors"}},
              "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "x.SAFETENSORS", "model": ["1", 0]}},
              "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
              "4": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}}
    assert model_files(prompt) == {"sd/tiny.safetensors", "x.SAFETENSORS", "4x.pth"}
    assert model_files({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}}}) == set()


def test_a_file_is_held_when_a_loaded_key_ends_with_its_path():
    assert held({"sd/tiny.safetensors"}, [KEY]) == 1
    assert held({"tiny.safetensors"}, [KEY]) == 1
    assert held({"d/tiny.safetensors", "other.safetensors"}, [KEY]) == 0  # a name ends at a separator


def test_only_an_idle_fresh_worker_holding_more_wins():
    files = {"sd/tiny.safetensors"}
    now = 1000.0

    def worker(wid: str, **kw):
        return {"id": wid, "loaded_models": [KEY], "running": [], "draining": False, "updated": now, **kw}

    assert better_idle_holder(files, [], "me", [worker("b")], fresh=15, now=now) == "b"
    assert better_idle_holder(files, [KEY], "me", [worker("b")], fresh=15, now=now) is None  # we hold it too
    assert better_idle_holder(files, [], "me", [worker("b", running=["p"])], fresh=15, now=now) is None
    assert better_idle_holder(files, [], "me", [worker("b", draining=True)], fresh=15, now=now) is None
    assert better_idle_holder(files, [], "me", [worker("b", updated=now - 20)], fresh=15, now=now) is None
    assert better_idle_holder(files, [], "me", [worker("me")], fresh=15, now=now) is None
    assert better_idle_holder(set(), [], "me", [worker("b")], fresh=15, now=now) is None


def encode(text: str) -> dict:
    """Loads the tiny checkpoint's text encoder into the worker's model manager."""
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15-tiny-seed0.safetensors"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


def holders(front: ServerProcess) -> list[str]:
    workers = front.get("/api/cluster").json()["workers"]
    return [w["id"] for w in workers if any("sd15-tiny-seed0" in key for key in w["loaded_models"])]


@pytest.mark.slow
def test_prompts_naming_a_loaded_checkpoint_stay_on_its_worker(tmp_path):
    """Two idle workers; once one has loaded the checkpoint, every later prompt naming it runs there.
    Without affinity each would land on either worker, and the other would load the checkpoint too."""
    sys.path.append(str(REPO_ROOT / "plugins" / "core_nodes" / "tests"))
    from _sd_checkpoints import tiny_checkpoint

    checkpoint = tiny_checkpoint()
    server = os.environ.get(TEST_POSTGRES)
    database = database_for(server, str(tmp_path / "db")) if server else str(tmp_path / "comfy-kernel.db")
    nats = NatsServer(tmp_path / "nats").start()
    workers, front = [], None
    try:
        for i in range(2):
            base = tmp_path / f"worker{i}"
            (base / "models" / "checkpoints").mkdir(parents=True)
            (base / "models" / "checkpoints" / checkpoint.name).symlink_to(checkpoint)
            worker = WorkerProcess(base, nats.url, database, str(tmp_path / "output"))
            worker.cmd = [a if a != OTHER_PLUGINS else PLUGINS_OFF for a in worker.cmd]
            workers.append(worker.start())
            worker.wait_ready()  # one at a time: the first migrates the new SQLite file
        base = tmp_path / "front"
        (base / "models" / "checkpoints").mkdir(parents=True)
        (base / "models" / "checkpoints" / checkpoint.name).symlink_to(checkpoint)
        install_pack(base)
        front = ServerProcess(base, "--role", "api", "--nats", nats.url, "--database", database,
                              "--disable-plugins", PLUGINS_OFF, startup_timeout=120).start()
        for i in range(6):
            r = front.post("/prompt", json={"prompt": encode(f"prompt {i}")})
            assert r.status_code == 200, r.text
            result = wait_history(front, r.json()["prompt_id"], timeout=120)
            assert result["status"]["status_str"] == "success", result["status"]
            deadline = time.monotonic() + 15
            while len(holders(front)) != 1:  # the holder announces itself as soon as the prompt is done
                assert time.monotonic() < deadline, f"after prompt {i}: holders {holders(front)}"
                time.sleep(0.05)
        [holder] = holders(front)
        other = next(w for w in front.get("/api/cluster").json()["workers"] if w["id"] != holder)
        assert other["done"] == 0 and not any("sd15-tiny-seed0" in k for k in other["loaded_models"])
    finally:
        if front is not None:
            front.stop()
            front.client.close()
        for worker in workers:
            worker.stop()
        nats.stop()
