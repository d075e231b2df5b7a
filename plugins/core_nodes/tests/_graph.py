"""Run node graphs through a real server and read back what ``TestProbe`` nodes recorded.

Usage in a test module (``graph_server`` is a fixture of this folder's conftest)::

    def test_invert(graph_server):
        out = graph_server.run({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "TestProbe", "inputs": {"value": ["2", 0], "name": "inv"}},
        })
        assert out["inv"].min() == 1.0

The server runs with the core nodes, the probe pack in ``custom_nodes/``
and ``--cpu``; one server per test module. ``run`` returns ``{name:
recorded value}``: numpy arrays for tensors, ``{key: array}`` plus the other
keys for dicts of tensors (LATENT), plain values otherwise. A failing prompt
raises AssertionError with the server's error message.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfy_kernel.testing import ServerProcess

PROBE_PACK = Path(__file__).parent / "probe_pack"


class GraphServer:
    def __init__(self, server: ServerProcess, base: Path) -> None:
        self.server = server
        self.base = base
        self.client_id = uuid.uuid4().hex

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def models_dir(self, folder: str) -> Path:
        path = self.base / "models" / folder
        path.mkdir(parents=True, exist_ok=True)
        return path

    def queue(self, prompt: dict[str, Any], **extra: Any) -> str:
        r = self.server.post("/prompt", json={"prompt": prompt, "client_id": self.client_id, **extra})
        if r.status_code != 200:
            raise AssertionError(f"prompt refused ({r.status_code}): {r.text}")
        return r.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The history entry of a finished prompt."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.server.get(f"/history/{prompt_id}").json().get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") != "success":
                    messages = entry["status"].get("messages")
                    raise AssertionError(f"prompt failed: {json.dumps(messages)[:4000]}")
                return entry
            time.sleep(0.02)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict[str, Any], timeout: float = 300.0, **extra: Any) -> dict[str, Any]:
        """Queue ``prompt``, wait for it, and return what its probes recorded."""
        entry = self.wait(self.queue(prompt, **extra), timeout)
        recorded: dict[str, Any] = {}
        for output in entry.get("outputs", {}).values():
            for item in output.get("probe", []):
                recorded[item["name"]] = self._read(item)
        return recorded

    def run_with_outputs(self, prompt: dict[str, Any], timeout: float = 300.0,
                         **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Like ``run``, plus the history ``outputs`` (node id -> UI result) of the same prompt."""
        outputs = self.wait(self.queue(prompt, **extra), timeout)["outputs"]
        recorded = {item["name"]: self._read(item) for output in outputs.values() for item in output.get("probe", [])}
        return recorded, outputs

    def outputs(self, prompt: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Queue ``prompt`` and return its history ``outputs`` (node id -> UI result)."""
        return self.wait(self.queue(prompt), timeout)["outputs"]

    def error(self, prompt: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Run a prompt that must fail at execution; returns the ``execution_error`` message data."""
        prompt_id = self.queue(prompt)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.server.get(f"/history/{prompt_id}").json().get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                assert entry["status"]["status_str"] == "error", entry["status"]
                for kind, data in entry["status"]["messages"]:
                    if kind == "execution_error":
                        return data
                raise AssertionError(f"no execution_error in {entry['status']}")
            time.sleep(0.02)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s")

    def _read(self, item: dict[str, Any]) -> Any:
        folder = self.output_dir / "probes"
        if "tensor" in item:
            return np.load(folder / item["tensor"])
        if "tensors" in item:
            with np.load(folder / item["tensors"]) as data:
                return {**{k: data[k] for k in data.files}, **item["other"]}
        return item["value"]


@pytest.fixture(scope="module")
def graph_server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("graph")
    shutil.copytree(PROBE_PACK, base / "custom_nodes" / "probe_pack")
    with ServerProcess(base, "--cpu") as server:
        yield GraphServer(server, base)
