"""LotusConditioning (ComfyUI's comfy_extras.nodes_lotus): Lotus-D's fixed text conditioning."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from comfy_kernel.nodes import io

from ...nodes.common import NodeDef

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch

MODULE = "comfy_extras.nodes_lotus"
#: the SD 2 text encoder's output for the empty prompt, as ComfyUI ships it (tools/lotus_conditioning_data.py)
DATA = Path(__file__).with_name("empty_prompt.safetensors")


@cache
def empty_prompt() -> torch.Tensor:
    """The stored embedding in float32 (the values are exact in the file's float16)."""
    from safetensors.torch import load_file

    return load_file(str(DATA))["conditioning"].float()


class LotusConditioning(io.ComfyNode):
    """No inputs: Lotus-D was trained on the empty prompt through a frozen encoder, so its conditioning is
    a constant and no text encoder needs loading."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LotusConditioning", category="conditioning/lotus", inputs=[],
                         outputs=[io.Conditioning.Output(display_name="conditioning")])

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput([[empty_prompt().clone(), {}]])


NODES = [NodeDef("LotusConditioning", LotusConditioning, None, MODULE)]
