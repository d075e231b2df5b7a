"""Every node runs under ``torch.inference_mode()``, also in a run that started before torch was imported.

The engine enters inference mode for a whole run when torch is loaded; the
first prompt after start-up (here with ``--no-warmup``) starts without it,
and the node that needs torch imports it. The nodes after that one must
still run in inference mode, as in every later run and in ComfyUI: before,
they ran with autograd's bookkeeping and ``serve --compile`` compiled the
network a second time, without frozen weights, at half the speed.
"""

from __future__ import annotations

import pytest

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY
from tests.e2e.execution_helpers import Client

pytest.importorskip("torch")

PACK = '''
class MakesTensor:
    CATEGORY = "testing"
    RETURN_TYPES = ("TENSOR",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value):
        import torch
        return (torch.full((2,), float(value)),)


class ReportsMode:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tensor": ("TENSOR",)}}

    def run(self, tensor):
        import torch
        return {"ui": {"inference": [torch.is_inference_mode_enabled()], "sum": [float((tensor * 2).sum())]}}


NODE_CLASS_MAPPINGS = {"MakesTensor": MakesTensor, "ReportsMode": ReportsMode}
'''


def test_nodes_after_the_first_torch_import_run_in_inference_mode(tmp_path):
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "reports_mode.py").write_text(PACK)
    with ServerProcess(base, *KERNEL_ONLY, "--no-warmup") as server:
        client = Client(server)
        seen = []
        try:
            for value in (1, 2):
                prompt = {"1": {"class_type": "MakesTensor", "inputs": {"value": value}},
                          "2": {"class_type": "ReportsMode", "inputs": {"tensor": ["1", 0]}}}
                result = client.run(prompt)
                assert result.error is None, result.error
                seen.append(client.history(result.prompt_id)["outputs"]["2"])
        finally:
            client.close()
    assert seen == [{"inference": [True], "sum": [4.0]}, {"inference": [True], "sum": [8.0]}], seen
