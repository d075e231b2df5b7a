"""POST /free through a real server: models leave memory, caches empty."""

from __future__ import annotations

import os
import shutil
import time

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY
from tests.e2e.execution_helpers import Client

PACK = os.path.join(os.path.dirname(os.path.dirname(__file__)), "nodepacks", "model_nodes")

USE = {"1": {"class_type": "TestUseModel", "inputs": {"seed": 3}},
       "2": {"class_type": "TestModelStates", "inputs": {"after": ["1", 0]}}}
LOOK = {"1": {"class_type": "TestModelStatesOnly", "inputs": {}}}


def _states(client: Client, prompt: dict) -> list[str]:
    result = client.run(prompt)
    return client.history(result.prompt_id)["outputs"][next(iter(
        n for n, c in prompt.items() if c["class_type"].startswith("TestModelStates")))]["states"]


def test_free_unloads_models_and_clears_caches(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(PACK, base / "custom_nodes" / "model_nodes")
    with ServerProcess(base, *KERNEL_ONLY) as server:
        client = Client(server)
        try:
            assert _states(client, USE) == ["tests/linear64=device:1"]
            # Cached: the model node does not run again, the model stays loaded.
            again = client.run(USE)
            assert "1" in again.cached and "1" not in again.ran
            assert server.post("/free", json={"unload_models": True}).status_code == 200
            time.sleep(0.2)
            assert _states(client, LOOK) == ["tests/linear64=disk:1"]
            # free_memory also empties the executor's caches: the model node runs (and loads) again.
            assert server.post("/free", json={"free_memory": True}).status_code == 200
            time.sleep(0.2)
            rerun = client.run(USE)
            assert "1" in rerun.ran
            assert client.history(rerun.prompt_id)["outputs"]["2"]["states"] == ["tests/linear64=device:2"]
            assert server.post("/free", content=b"").status_code == 200  # empty body is {}
        finally:
            client.close()
