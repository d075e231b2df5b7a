"""The core nodes' warm-up: model code imported ahead, used models recorded and preloaded.

In-process: loading the tiny checkpoint records the file in the user
directory; after every model is unloaded, ``preload`` loads it again from
that record. Through a server: a second start with ``--preload``
loads, during its warm-up, what the first one's prompt used.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from comfy_kernel.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import use_base  # noqa: E402
from _server import PromptClient, prepare_base  # noqa: E402

pytestmark = pytest.mark.slow

DECODE = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15-tiny-seed0.safetensors"}},
    "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
}


def test_loaded_file_is_recorded_and_preloaded(tmp_path, sd15_tiny_checkpoint, reference_outputs):
    from comfy_kernel import gpu
    from comfy_kernel_core_nodes import warmup
    from comfy_kernel_core_nodes.nodes.loaders import CheckpointLoaderSimple

    base = prepare_base(tmp_path, sd15_tiny_checkpoint, reference_outputs.parent)
    user = use_base(base).dirs.user
    unet, clip, vae = CheckpointLoaderSimple().load_checkpoint(sd15_tiny_checkpoint.name)
    record = json.loads((Path(user) / warmup.RECORD_NAME).read_text())
    assert record == [{"kind": "checkpoint", "args": [str(base / "models" / "checkpoints" /
                                                         sd15_tiny_checkpoint.name)]}]

    gpu.model_manager().unload_all()
    parts = (unet, clip.patcher, vae.patcher)
    assert not any(p._handle(register=False) is not None and p._handle(register=False).loaded for p in parts)
    assert warmup.preload(user) == 1
    # A new loader call finds the weights the preload put in the model manager.
    unet2, clip2, vae2 = CheckpointLoaderSimple().load_checkpoint(sd15_tiny_checkpoint.name)
    assert all(p._handle(register=False).loaded for p in (unet2, clip2.patcher, vae2.patcher))
    gpu.model_manager().unload_all()


def test_record_keeps_the_most_recent_loads_first(tmp_path, sd15_tiny_checkpoint, reference_outputs):
    from comfy_kernel_core_nodes import warmup

    base = prepare_base(tmp_path, sd15_tiny_checkpoint, reference_outputs.parent)
    user = use_base(base).dirs.user
    names = [f"vae{i}.safetensors" for i in range(warmup.PRELOAD_LOADS + 2)]
    for name in names:
        warmup.remember("vae", str(tmp_path / name))
    warmup.remember("vae", str(tmp_path / names[0]))  # seen already: the record is not rewritten
    record = warmup.read_record(user)
    assert [Path(e["args"][0]).name for e in record] == names[::-1][:warmup.PRELOAD_LOADS]
    # A record naming a missing file is skipped.
    assert warmup.preload(user) == 0


def test_server_preloads_what_the_last_run_used(tmp_path, sd15_tiny_checkpoint, reference_outputs):
    base = prepare_base(tmp_path, sd15_tiny_checkpoint, reference_outputs.parent)
    with ServerProcess(base, "--cpu", env={"OMP_NUM_THREADS": "1"}) as server:
        client = PromptClient(server)
        try:
            client.run(DECODE)
        finally:
            client.close()
    assert (base / "user" / "comfy-kernel.models.json").is_file()
    with ServerProcess(base, "--cpu", "--preload", env={"OMP_NUM_THREADS": "1"}, warmup=True) as server:
        deadline = time.monotonic() + 300
        while server.get("/api/health").json()["warmup"] != "done" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.get("/api/health").json()["warmup"] == "done"
        assert "preloaded 1 model file(s) used last time" in server.log()
        client = PromptClient(server)
        try:
            _, messages = client.run(DECODE)
        finally:
            client.close()
        assert client.images(messages)
