"""A prompt asks each node class for its inputs once, at validation; the run reuses that answer.

ComfyUI asks ``INPUT_TYPES()`` again while running; for V3 nodes that rebuilds
the whole schema, and it was a measurable part of a trivial prompt's cost.
A prompt restored from the queue after a restart has no validation behind
it and asks again.
"""

from __future__ import annotations

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY
from tests.e2e.execution_helpers import Client

PACK = '''
ASKED = [0]


class CountsInputTypes:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        ASKED[0] += 1
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value):
        return {"ui": {"asked": [ASKED[0]]}}


NODE_CLASS_MAPPINGS = {"CountsInputTypes": CountsInputTypes}
'''


def test_input_types_is_asked_once_per_prompt(tmp_path):
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "counts_input_types.py").write_text(PACK)
    with ServerProcess(base, *KERNEL_ONLY) as server:
        client = Client(server)
        seen = []
        try:
            for value in range(3):
                prompt = {"1": {"class_type": "CountsInputTypes", "inputs": {"value": value}},
                          "2": {"class_type": "CountsInputTypes", "inputs": {"value": value + 100}}}
                result = client.run(prompt)
                assert result.error is None, result.error
                seen.append(client.history(result.prompt_id)["outputs"]["1"]["asked"][0])
        finally:
            client.close()
        assert [seen[1] - seen[0], seen[2] - seen[1]] == [1, 1], seen
