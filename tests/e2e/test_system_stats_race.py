"""``/system_stats`` answers, at once, while the first prompt is importing torch.

The kernel starts without torch (start-up stays fast); the first node that
needs it imports it on a worker thread, and for a second or more a
half-initialised ``torch`` sits in ``sys.modules``. Reading it then answered
500 ("partially initialized module 'torch'"), or the server's loop waited for
the import to finish and every request stalled for its duration.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY

pytest.importorskip("torch")

PACK = '''
class ImportsTorch:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        import torch
        return {"ui": {"text": [str(torch.zeros(1).shape)]}}


NODE_CLASS_MAPPINGS = {"ImportsTorch": ImportsTorch}
'''


@pytest.mark.slow
def test_system_stats_while_torch_is_being_imported(tmp_path):
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "imports_torch.py").write_text(PACK)
    with ServerProcess(base, *KERNEL_ONLY) as server:
        statuses: list[int] = []
        latencies: list[float] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    start = time.perf_counter()
                    statuses.append(client.get("/system_stats").status_code)
                    latencies.append(time.perf_counter() - start)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            posted = time.monotonic()
            r = server.post("/prompt", json={"prompt": {"1": {"class_type": "ImportsTorch", "inputs": {}}}})
            assert r.status_code == 200, r.text
            prompt_id = r.json()["prompt_id"]
            deadline = time.monotonic() + 120
            while prompt_id not in server.get(f"/history/{prompt_id}").json():
                assert time.monotonic() < deadline, "the prompt did not finish"
                time.sleep(0.05)
            importing = time.monotonic() - posted  # the worker imports torch for the first prompt
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert len(statuses) > 20 and set(statuses) == {200}, sorted(set(statuses))
        assert "unhandled error" not in server.log()
        if importing >= 1.0:  # a slow enough import to tell a stalled loop from a busy machine
            assert max(latencies) < 0.6 * importing, (max(latencies), importing)
        stats = server.get("/system_stats").json()
        import torch

        assert stats["system"]["pytorch_version"] == str(torch.__version__)
