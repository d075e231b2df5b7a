"""The background warm-up: the server answers first, then imports what prompts will need.

``GET /api/health`` reports ``warmup``: ``off`` (``--no-warmup``), ``running``
or ``done``. The core nodes import their model and sampler code only when a
node first needs it, or when the warm-up imports it; a prompt that needs
neither tells the two apart. (The test node pack itself imports torch.)
"""

from __future__ import annotations

import time

import pytest

from comfy_kernel.testing import ServerProcess

from .execution_helpers import OUT, Client, install_pack

pytestmark = pytest.mark.slow

MODULES = ("comfy_kernel_core_nodes.families.sd.unet", "comfy_kernel_core_nodes.sampling")


def loaded(client: Client, name: str) -> str:
    res = client.run({"1": {"class_type": "TestModuleLoaded", "inputs": {"name": name}}, "2": OUT(["1", 0])})
    assert res.error is None, res.error
    return res.events("executed")[0]["output"]["text"][0]


def wait_for_warmup(server: ServerProcess, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = server.get("/api/health").json()
        if health["warmup"] == "done" or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def test_warmup_imports_torch_and_model_code_after_start(tmp_path):
    install_pack(tmp_path)
    with ServerProcess(tmp_path, "--cpu", warmup=True) as server:
        assert server.get("/api/health").json()["warmup"] in ("running", "done")
        health = wait_for_warmup(server)
        assert health["warmup"] == "done", health
        client = Client(server)
        try:
            for name in MODULES:
                assert loaded(client, name) == "'yes'", name
        finally:
            client.close()
        assert "Warm-up done in" in server.log()


def test_no_warmup_leaves_torch_to_the_first_prompt_that_needs_it(tmp_path):
    install_pack(tmp_path)
    with ServerProcess(tmp_path, "--cpu", "--no-warmup", warmup=True) as server:
        assert server.get("/api/health").json()["warmup"] == "off"
        client = Client(server)
        try:
            for name in MODULES:
                assert loaded(client, name) == "'no'", name
        finally:
            client.close()
        assert server.get("/api/health").json()["warmup"] == "off"
